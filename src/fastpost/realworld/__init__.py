"""The RealWorld ("Conduit") API at /api: a thin adapter over fastpost's own services.

Articles are posts, favorites are likes, profiles are users, following is follows; the
only things this package owns are the API's shapes (envelopes, camelCase, its error body)
and the read statements that produce exactly those shapes in one round trip.
"""
