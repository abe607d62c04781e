"""Studies: experiment files and their knobs (experiment.py), the command line of a run (cli.py), sweeps as local
processes (sweep.py) or SLURM jobs (cluster.py), and reports of a study's runs (report.py) drawn with one figure
style (plotting.py)."""
