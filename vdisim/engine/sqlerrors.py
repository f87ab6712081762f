"""SQL Server messages the emulated engine reports, with SQL Server's numbers.

A statement's outcome is a list of :class:`SqlMessage` (informational, severity <= 10)
and, when it fails, :class:`SqlError` raised with the terminating message.  Texts follow
the ones SQL Server prints (spec §8.3, §11.1); ``{}`` fields are filled by
:func:`message`.  Numbers not listed here must not be invented ad hoc: add them to
``CATALOGUE`` with a source comment.
"""

from __future__ import annotations

import attrs

# number -> (severity, text template).  Templates use str.format with positional fields.
CATALOGUE: dict[int, tuple[int, str]] = {
    # Syntax and name resolution
    102: (15, "Incorrect syntax near '{}'."),
    155: (15, "'{}' is not a recognized {} option."),
    911: (16, "Database '{}' does not exist. Make sure that the name is entered correctly."),
    1801: (16, "Database '{}' already exists. Choose a different database name."),
    3701: (11, "Cannot drop the database '{}', because it does not exist or you do not have permission."),
    # Success messages (severity 0 = informational)
    3014: (0, "{} successfully processed {} pages in {:.3f} seconds ({:.3f} MB/sec)."),
    3211: (0, "{} percent processed."),
    3262: (0, "The backup set on file 1 is valid."),
    4035: (0, "Processed {} pages for database '{}', file '{}' on file 1."),
    3013: (16, "{} is terminating abnormally."),
    # Device / VDI failures (§8.3)
    18210: (16, "{}: {} failure on backup device '{}'. Operating system error {}."),
    3041: (16, "BACKUP failed to complete the command {}. Check the backup application log for detailed messages."),
    3201: (16, "Cannot open backup device '{}'. Operating system error {}."),
    3202: (16, "Write on \"{}\" failed: {}"),
    3203: (16, "Read on \"{}\" failed: {}"),
    3271: (16, "A nonrecoverable I/O error occurred on file \"{}:\" {}."),
    3266: (16, "The backup data at the end of \"{}\" is incorrectly formatted. Backup sets on the media might be damaged and unusable."),
    3241: (16, "The media family on device '{}' is incorrectly formed. SQL Server cannot process this media family."),
    3242: (16, "The file on device '{}' is not a valid Microsoft Tape Format backup set."),
    3132: (16, "The media set has {} media families but only {} are provided. All members must be provided."),
    3183: (16, "RESTORE detected an error on page ({}:{}) in database \"{}\" as read from the backup set."),
    3189: (16, "Damage to the backup set was detected."),
    # Restore sequencing (LSN chain)
    3117: (16, "The log or differential backup cannot be restored because no files are ready to rollforward."),
    3154: (16, "The backup set holds a backup of a database other than the existing '{}' database."),
    3159: (16, "The tail of the log for the database \"{}\" has not been backed up. Use BACKUP LOG WITH NORECOVERY to back up the log if it contains work you do not want to lose."),
    4305: (16, "The log in this backup set begins at LSN {}, which is too recent to apply to the database. An earlier log backup that includes LSN {} can be restored."),
    4326: (16, "The log in this backup set terminates at LSN {}, which is too early to apply to the database. A more recent log backup that includes LSN {} can be restored."),
    4214: (16, "BACKUP LOG cannot be performed because there is no current database backup."),
    3035: (16, "Cannot perform a differential backup for database \"{}\", because a current database backup does not exist."),
    3021: (16, "Cannot perform a backup or restore operation within a transaction."),
    3108: (16, "To restore the master database, the server must be running in single-user mode."),
    3234: (16, "Logical file '{}' is not part of database '{}'. Use RESTORE FILELISTONLY to list the logical file names."),
    3110: (14, "User does not have permission to RESTORE database '{}'."),
    # Option validation
    3205: (16, "Too many backup devices specified for backup or restore; only {} are allowed."),
    3227: (16, "The backup media on \"{}\" is part of a multi-family media set. {} families are expected; {} are provided."),
    3636: (16, "An error occurred while processing '{}' metadata for database id {}, file id {}."),
    15153: (16, "The BLOCKSIZE value {} is invalid. It must be a power of 2 between 512 and 65536."),
    3250: (16, "The value '{}' is not within range for the {} parameter."),
    4208: (16, "The statement BACKUP LOG is not allowed while the recovery model is SIMPLE. Use BACKUP DATABASE or change the recovery model using ALTER DATABASE."),
    3031: (16, "Option '{}' conflicts with option(s) '{}'. Remove the conflicting option and reissue the statement."),
    # T-SQL recogniser (vdisim/engine/tsql.py).  Source: Microsoft "Database engine events and
    # errors" tables (sql-docs, docs/relational-databases/errors-events/), texts verbatim.
    103: (15, "The {} that starts with '{}' is too long. Maximum length is {}."),
    105: (15, "Unclosed quotation mark after the character string '{}'."),
    113: (15, "Missing end comment mark '*/'."),
    119: (15, "Must pass parameter number {} and subsequent parameters as '@name = value'. "
              "After the form '@name = value' has been used, all subsequent parameters must "
              "be passed in the form '@name = value'."),
    137: (15, 'Must declare the scalar variable "{}".'),
    201: (16, "Procedure or function '{}' expects parameter '{}', which was not supplied."),
    207: (16, "Invalid column name '{}'."),
    245: (16, "Conversion failed when converting the {} value '{}' to data type {}."),
    1038: (15, "An object or column name is missing or empty. For SELECT INTO statements, "
               "verify each column has a name. For other statements, look for empty aliases. "
               "Aliases defined as \"\" or [] are not allowed. Change the alias to a valid name."),
    2812: (16, "Could not find stored procedure '{}'."),
    3011: (16, "All backup devices must be of the same general class "
               "(for example, DISK and TAPE)."),
    3025: (16, "Missing database name. Reissue the statement specifying a valid database name."),
    3032: (16, "One or more of the options ({}) are not supported for this statement. "
               "Review the documentation for supported options."),
    3044: (16, "Invalid zero-length device name. "
               "Reissue the BACKUP statement with a valid device name."),
    3253: (16, "The block size parameter must supply a value that is a power of 2."),
    3277: (16, "WITH SNAPSHOT must be used with only one virtual device."),
    8114: (16, "Error converting data type {} to {}."),
    8115: (16, "Arithmetic overflow error converting {} to data type {}."),
    8143: (16, "Parameter '{}' was supplied multiple times."),
    8144: (16, "Procedure or function {} has too many arguments specified."),
    8145: (16, "{} is not a parameter for procedure {}."),
    # Media format and restore sequencing (vdisim/engine/media.py).  Texts from the
    # "Database engine events and errors" table in MicrosoftDocs/sql-docs.
    927: (14, "Database '{}' cannot be opened. It is in the middle of a restore."),
    3118: (16, "The database \"{}\" does not exist. RESTORE can only create a database when restoring either a full backup or a file backup of the primary file."),
    3120: (16, "This backup set will not be restored because all data has already been restored to a point beyond the time covered by this backup set."),
    3136: (16, "This differential backup cannot be restored because the database has not been restored to the correct earlier state."),
    3153: (16, "The database is already fully recovered."),
    3208: (16, "Unexpected end of file while reading beginning of backup set. Confirm that the media contains a valid SQL Server backup set, and see the console error log for more details."),
    3231: (16, "The media loaded on \"{}\" is formatted to support {} media families, but {} media families are expected according to the backup device specification."),
    3258: (16, "The volume on the device \"{}\" is not part of the media set that is currently being processed. Ensure that the backup devices are loaded with the correct media."),
    # Catch-all for statements the emulator does not implement
    40517: (16, "Keyword or statement option '{}' is not supported in this version of SQL Server."),
}


@attrs.frozen
class SqlMessage:
    """One message as a connection receives it (INFO or ERROR token in TDS terms)."""

    number: int
    severity: int
    state: int
    text: str

    def to_json(self) -> dict[str, object]:
        return {"number": self.number, "severity": self.severity, "state": self.state,
                "text": self.text}

    @classmethod
    def from_json(cls, d: dict[str, object]) -> SqlMessage:
        return cls(int(d["number"]), int(d["severity"]), int(d["state"]),  # type: ignore[call-overload]
                   str(d["text"]))


def message(number: int, *args: object, state: int = 1) -> SqlMessage:
    """Build the catalogue message ``number`` with its fields filled from ``args``."""
    severity, template = CATALOGUE[number]
    return SqlMessage(number, severity, state, template.format(*args))


class SqlError(Exception):
    """A statement failed.  ``messages`` are every message of the failure, in order,
    the last being the terminating one (usually 3013)."""

    def __init__(self, messages: list[SqlMessage]) -> None:
        if not messages:
            raise ValueError("SqlError needs at least one message")
        self.messages = list(messages)
        super().__init__(f"Msg {messages[0].number}: {messages[0].text}")

    @property
    def number(self) -> int:
        """The first error's number (the one SQL Server clients usually surface)."""
        return self.messages[0].number

    @property
    def numbers(self) -> list[int]:
        return [m.number for m in self.messages]


def sql_error(number: int, *args: object, state: int = 1) -> SqlError:
    return SqlError([message(number, *args, state=state)])
