"""Command-line interface.

Modules here may import the rest of spikeguard inside the command functions (lazily), so that
``spikeguard --help`` and argument errors stay fast; everywhere else imports sit at module level
(``tests/test_imports.py`` checks both, and that there are no import cycles).
"""
