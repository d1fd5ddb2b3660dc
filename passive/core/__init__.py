"""What every layer of the application may use: errors, safe text, times and endpoints. Imports nothing else."""
