"""Reports: the campaign report (report), the data summary and inspection (data_report), the tables and
live progress the verbs print (display)."""
