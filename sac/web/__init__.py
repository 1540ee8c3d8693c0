"""The operators' web application: Klein routes, Jinja2 pages, sign-in and roles."""
