"""The data sources the study reads: the embedded simulator and real logs (KuaiRand, a generic format).

Every source is turned into the study's schema (:class:`dmtl.schema.FeedLog`); :mod:`dmtl.sources.registry`
dispatches ``data.source`` to its loader. This ``__init__`` stays empty so that importing one source (the
evaluation stage reads only the simulator's oracle) does not import the others.
"""
