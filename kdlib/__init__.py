"""KETCHUP kit: RL-based knowledge distillation for text generation.

Every formula and loop of the kit lives in this package; notebooks only call it.
Floors (imports point down only):
  4  __main__                      command-line verbs
  3  trainers.{supervised,divergence,rl}
  2  evaluate, judge, report
  1  data, models, runs, generation
  0  config, returns, losses, metrics, stats, calculator
"""

__version__ = "0.1.0"
