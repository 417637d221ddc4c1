-- busted.lua — runs busted inside the runbook binary (`runbook exec`), so
-- the specs see the real embedded modules and C host. Options come from
-- .busted at the top of the tree.
require("busted.runner")({ standalone = false })
