/* embed.h — the embedded Lua sources (generated into build/embed.c). */
#ifndef RUNBOOK_EMBED_H
#define RUNBOOK_EMBED_H
#include <stddef.h>
struct embedded_chunk {
  const char *name;      /* module name for require: "runbook.cli" */
  const char *chunkname; /* "@lua/runbook/cli.lua" */
  const char *src;
  size_t len;
};
extern const struct embedded_chunk runbook_embedded[];
extern const size_t runbook_embedded_count;
#endif
