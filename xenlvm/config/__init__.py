"""The configuration: its records, the values' parsers, and the file's one reader."""
