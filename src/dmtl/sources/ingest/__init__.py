"""What every real-data source shares on its way into the study's schema (docs/data_formats.md).

Modules: :mod:`.reading` (folders, headers, tables, encodings, required columns), :mod:`.convert` (typed
conversions and whole-file checks of times and durations), :mod:`.side_features` (user and item feature
tables and their join), :mod:`.policies` (the row policies and the finished :class:`~dmtl.schema.FeedLog`) and
:mod:`.chunked` (reading a log in chunks into log shards of whole users, the out-of-core path).
"""
