"""Routing: where a classified film goes, decided from its pixels' verdict and its header.

Pure decisions, no I/O (the adapter reads the header and applies the decision):

- :mod:`.decision`        the routed class (``MinimumScore``), then the rules; ``RoutingDecision``
- :mod:`.rules`           the routing rules and their evaluation, with the reasons ``explain`` shows
- :mod:`.rule_parsing`    the rule list of ``Routes`` validated, problems naming the rule and key
- :mod:`.fusion`          the header's body part as evidence combined with the model's probabilities
- :mod:`.series`          ``DecisionLevel: series``: a score-weighted vote of a series' films
- :mod:`.audit`           the header's vocabulary of regions; does the header agree with the pixels?
- :mod:`.image_facts`     region, view, turn and polarity in the words shown everywhere
- :mod:`.ingest_headers`  the header of an instance as captured at ingest

May import: inference, imaging, config, errors, logs, states.
"""
