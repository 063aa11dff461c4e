"""The storage layer's base error, apart from the database code so that light modules
(`states`, and through it the CLI's status names) raise it without loading SQLAlchemy."""


class StorageError(Exception):
    """Anything the job database refuses or fails to do, in words a user can act on."""
