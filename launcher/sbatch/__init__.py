"""The batch-script format both backends run: the values sbatch reads (values.py: times, memory,
signals, constraints), the options beyond the core resources (options.py), array syntax
(arrays.py). Pure: no client is called here."""
