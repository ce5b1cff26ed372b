"""Industry building: adjusted stock bars + a point-in-time classification -> industry bars
(or industry series taken as given)."""
