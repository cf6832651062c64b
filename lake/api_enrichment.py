"""The enrichment part of PutEventConfiguration/GetEventConfiguration for `lake serve`.

Why no `@operation` here: one CloudTrail operation carries MaxEventSize, ContextKeySelectors and
AggregationConfigurations, and `lake/api_aggregation.py` registers it. Its store branch calls
`put_store_context` for the first two settings, so the rules live in one place (`lake.enrichment`): the
model's limits on selectors, supported condition keys, and "selectors require MaxEventSize Large", applied in
a single metadata commit. Errors come back as the model's exception names.
"""

from __future__ import annotations

from .apicore import ApiError
from .enrichment import get_event_configuration, put_event_configuration
from .errors import LakeError


def put_store_context(st, max_event_size: str | None, context_key_selectors: list | None) -> dict:
    """Apply MaxEventSize/ContextKeySelectors to a store; {MaxEventSize, ContextKeySelectors} after the change.

    Nothing is written when both are None. InvalidParameterCombinationException when the selectors would be
    left without MaxEventSize Large; InvalidParameterException for selectors outside the model's limits;
    InactiveEventDataStoreException for a store pending deletion.
    """
    if max_event_size is None and context_key_selectors is None:
        return get_event_configuration(st)
    try:
        return put_event_configuration(st, max_event_size=max_event_size,
                                       context_key_selectors=context_key_selectors)
    except LakeError as e:
        raise ApiError(e.code, str(e).splitlines()[0]) from None


def get_store_context(st) -> dict:
    """{MaxEventSize, ContextKeySelectors} of a store (an empty list when enrichment is off)."""
    return get_event_configuration(st)


__all__ = ["put_store_context", "get_store_context"]
