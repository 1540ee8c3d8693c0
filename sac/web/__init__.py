"""The operators' web application: Klein routes, Jinja2 pages, sign-in and roles."""

# First, before any module of this package imports spyne: on Python 3.12+ spyne imports only
# once spyne_compat has put its finder for spyne's vendored six in place.
from sac.web import spyne_compat as _spyne_compat  # noqa: F401
