"""KETCHUP kit: RL-based knowledge distillation for text generation.

Every formula and loop of the kit lives in this package; notebooks only call it. The tree is the architecture;
imports point down only (``tests/test_layout.py`` checks it):

  6  __main__                        the command line
  5  studies.*  report.*             one study per notebook; tables, figures, the index page (read results only)
  4  chains.*                        the run cache's stages (core registry; one module per rival system), scheduler
  3  trainers.*                      one loop per family on the shared harness; task bundles; run folders
  2  modeling.*  data.*  config.*    models, decoding, generation; generated and hub tasks; validated params
     judge.*                         the pairwise judge
  1  maths.*                         pure tensor/array functions (no kit imports)
"""

__version__ = "0.1.0"
