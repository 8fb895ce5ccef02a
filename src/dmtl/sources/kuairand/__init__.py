"""The official KuaiRand files (Pure, 1K, 27K) as the study's log (docs/protocol.md section 6).

Modules: :mod:`.files` (the official file names, finding and choosing them, the pre-flight sizes),
:mod:`.load` (the loader, :func:`~.load.load_kuairand`) and :mod:`.shards` (the same files read in chunks into
log shards, the out-of-core path).
"""
