"""Floor 4: the run cache's stages. ``core`` holds the stage registry and the kit's own chain (teacher ->
pre-distilled student -> one distillation method); each rival system registers its own stages in its module
(``reward_distill``: seed 003, ``constrained_kd``: seed 004), which the registry imports by name on first use
(``core.SYSTEM_CHAINS``), never statically. ``schedule`` trains a notebook's runs in parallel along the stages'
dependency graph."""
