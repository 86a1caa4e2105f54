"""Floor 5: one module per notebook, named as the notebook and its params file
(``notebooks/NN_name.ipynb`` <-> ``params/<profile>/name.yaml`` <-> ``kdlib.studies.name``). Each study trains what is
missing through the run cache, returns tidy ``pandas`` frames, and has a ``plan(nb)`` listing the runs it reads.
``common`` holds what every study shares."""
