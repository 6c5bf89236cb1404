"""The one exception type for problems a user can fix.

Library code raises `MSGLDMError` with a single line that names the file (or dataset, or flag) and the fix; the CLI
prints it without a traceback and exits with status 2. Anything else is a bug and keeps its traceback.
"""


class MSGLDMError(Exception):
    """A user-fixable problem, described in one line."""
