"""What to label next: ranked suggestions from a trained run (``plantpheno data suggest``).

:mod:`.strategies` (random, margin, entropy, kcenter, cluster-margin, badge; disagreement for traits) on frozen
features, :mod:`.typical` (TypiClust, ProbCover and the budget-aware switch, for few labels), :mod:`.view` (what a
strategy sees and returns), :mod:`.pool` (which pool images can be used), :mod:`.features` (the run's cached features and head),
:mod:`.heads` (small heads on features), :mod:`.sheet` (the HTML contact sheet), :mod:`.suggest` (one round).
It sits above the registry: it uses a trained run. This ``__init__`` stays light.
"""
