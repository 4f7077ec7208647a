"""The batch-script format both backends run: the values sbatch reads (values.py: times, memory,
signals, constraints), the options beyond the core resources (options.py), array syntax
(arrays.py), the log naming and filename patterns (lognames.py). Pure: no client is called here."""
