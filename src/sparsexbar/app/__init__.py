"""What users run: the command line (cli), the tables, files and HTML report (report), the
report's and sweeps' figures (plotting), the engine benchmark (bench) and design-space sweeps
(sweep/). The top of the import graph: nothing below imports from here."""
