"""The extensions a dump needs (PostGIS for GeoDjango, hstore, pg_trgm, ...), made before pg_restore runs.

A dump's own ``CREATE EXTENSION`` runs as the target's owner (a dump's code never runs with more,
``seeddump.sandbox``), and most extensions (PostGIS among them) only a superuser may create. So seeddump makes
each extension the archive lists itself, in the new database, over its own connection and from the server's own
extension files: the statement is seeddump's (the name and schema read from the archive's table of contents,
quoted as identifiers), never SQL from the dump. pg_restore then skips the archive's entries for them (its
``--use-list``). A database made from ``SEEDDUMP_TEMPLATE`` (the ``template_postgis`` habit) may hold them
already; where neither works, the restore is refused before pg_restore in one line that names the extension and
who can create it. An in-place restore keeps them in the database it empties (``kept_in_place``): the target's
own, or made there by seeddump the same way.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from seeddump import driver, postgres
from seeddump.conf import conf
from seeddump.driver import sql
from seeddump.exceptions import SeeddumpError

# pg_restore -l lines are "<id>; <catalog oid> <oid> <kind> <schema> <name> <owner>".
_IDENT = r'(?:"(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_$]*)'
_CREATE = re.compile(rf"^CREATE EXTENSION IF NOT EXISTS ({_IDENT}) WITH SCHEMA ({_IDENT});$", re.MULTILINE)


@dataclass(frozen=True)
class Extension:
    name: str
    schema: str


def _unquote(identifier: str) -> str:
    return identifier[1:-1].replace('""', '"') if identifier.startswith('"') else identifier


def _toc(pg_restore: postgres.Program, archive: Path, pass_fds: Sequence[int], *args: str) -> str:
    return postgres.read_archive(pg_restore, archive, args, pass_fds=pass_fds, what="the dump's table of contents")


def in_archive(pg_restore: postgres.Program, archive: Path, pass_fds: Sequence[int], listing: str) -> list[Extension]:
    """The extensions the archive creates, in its order (which puts an extension after those it needs)."""
    if not any(" EXTENSION - " in line for line in listing.splitlines()):
        return []
    with tempfile.TemporaryDirectory(prefix="seeddump-toc-") as folder:
        only = Path(folder) / "extensions.list"
        only.write_text(
            "".join(f"{line}\n" for line in listing.splitlines() if " EXTENSION - " in line and "COMMENT" not in line)
        )
        script = _toc(pg_restore, archive, pass_fds, f"--use-list={only}", "--file=-")
    return [Extension(_unquote(name), _unquote(schema)) for name, schema in _CREATE.findall(script)]


def listing(pg_restore: postgres.Program, archive: Path, pass_fds: Sequence[int]) -> str:
    """pg_restore -l of the archive: its table of contents."""
    return _toc(pg_restore, archive, pass_fds, "--list")


def _skipped(
    listing: str, made: Sequence[Extension], schemas: Sequence[str], data: Sequence[tuple[str, str]] = ()
) -> str:
    """The table of contents with the entries of ``made`` (and of the schemas seeddump made for them, and the
    data of configuration tables it may not fill) commented out: their statements are never run."""
    entry = r"^\d+; \d+ \d+ "
    patterns = [
        re.compile(rf"{entry}(?:EXTENSION - |COMMENT - EXTENSION ){re.escape(extension.name)} ?$") for extension in made
    ] + [re.compile(rf"{entry}(?:SCHEMA - |COMMENT - SCHEMA ){re.escape(schema)}( |$)") for schema in schemas]
    patterns += [re.compile(rf"{entry}TABLE DATA {re.escape(schema)} {re.escape(table)} ") for schema, table in data]
    return "".join(
        f";{line}\n" if any(pattern.match(line) for pattern in patterns) else f"{line}\n"
        for line in listing.splitlines()
    )


@contextmanager
def made_beforehand(
    pg_restore: postgres.Program,
    archive: Path,
    pass_fds: Sequence[int],
    settings_dict: Mapping[str, Any],
    database: str,
    owner: str,
    recorded: Sequence[tuple[str, str, str]] | None = None,
) -> Iterator[list[str]]:
    """Creates the archive's extensions in ``database`` over seeddump's own connection (``settings_dict``), and
    yields pg_restore's extra arguments: the list that skips the archive's entries for them (none when the
    archive has no extension). SeeddumpError, before anything is restored, when one cannot be made.

    ``recorded``: the metadata's extensions (name, schema, version; None for a dump made before seeddump
    recorded them). Each is made at the version the dump recorded where the server offers it, else at the
    server's default. With none recorded the archive is not read: no extra pg_restore runs. Metadata that hides
    one only leaves the archive's CREATE EXTENSION to run as the owner, as before."""
    if recorded == ():
        yield []
        return
    toc = listing(pg_restore, archive, pass_fds)
    needed = in_archive(pg_restore, archive, pass_fds, toc)
    if not needed:
        yield []
        return
    made_schemas: list[str] = []
    with postgres.connect(settings_dict, database) as conn:
        for extension in needed:
            _make(conn, extension, owner, made_schemas, _versions(recorded))
        granted, skipped = _config_tables(conn, needed, owner)
        try:
            _rows_from_the_dump(conn, pg_restore, archive, pass_fds, toc, skipped)
        except BaseException:
            _revoke(conn, granted, owner)
            raise
    with tempfile.TemporaryDirectory(prefix="seeddump-toc-") as folder:
        use = Path(folder) / "restore.list"
        use.write_text(_skipped(toc, needed, made_schemas, [(config.schema, config.table) for config in skipped]))
        try:
            yield [f"--use-list={use}"]
        finally:
            if granted:
                with postgres.connect(settings_dict, database) as conn:
                    _revoke(conn, granted, owner)


@dataclass(frozen=True)
class ConfigTable:
    """An extension's configuration table (PostGIS's spatial_ref_sys) and what the restore does about it."""

    extension: str
    schema: str
    table: str
    granted: tuple[str, ...] = ()  # the privileges given to the owner for the restore, taken back after it

    @property
    def name(self) -> sql.Composable:
        return sql.Identifier(self.schema, self.table)


def _config_tables(
    conn: driver.Connection, needed: Sequence[Extension], owner: str, privileges: Sequence[str] = ("INSERT",)
) -> tuple[list[ConfigTable], list[ConfigTable]]:
    """An extension's configuration tables (PostGIS's spatial_ref_sys) hold the rows a user added, which the
    dump carries; they belong to whoever made the extension, not to the owner pg_restore acts as. Where
    seeddump's role may, the owner gets those of ``privileges`` it lacks for the restore (``granted``, revoked
    after; one it had before, such as the table owner's own, stays): INSERT, and in place DELETE too (the
    emptying removes the rows a user added, which the extension's own condition names, before the dump brings
    its own). Where not (a template or a target made by someone else), their data entries are skipped (the
    second list) and ``_rows_from_the_dump`` sees to the dump's rows."""
    rows = conn.execute(
        """
        SELECT e.extname, n.nspname, c.relname, pg_has_role(current_user, c.relowner, 'USAGE'),
               ARRAY(SELECT privilege FROM unnest(%s::text[]) AS privilege
                     WHERE NOT has_table_privilege(%s, c.oid, privilege))
        FROM pg_extension e, unnest(e.extconfig) AS config(oid), pg_class c, pg_namespace n
        WHERE e.extname = ANY(%s) AND c.oid = config.oid AND n.oid = c.relnamespace AND c.relkind = 'r'
        """,
        (list(privileges), owner, [extension.name for extension in needed]),
    ).fetchall()
    granted: list[ConfigTable] = []
    skipped: list[ConfigTable] = []
    for extension, schema, table, may, lacking in rows:
        if not may:
            skipped.append(ConfigTable(extension, schema, table))
        elif lacking:
            config = ConfigTable(extension, schema, table, tuple(lacking))
            granting = sql.SQL(", ").join(sql.SQL(privilege) for privilege in config.granted)
            conn.execute(sql.SQL("GRANT {} ON TABLE {} TO {}").format(granting, config.name, sql.Identifier(owner)))
            granted.append(config)
    return granted, skipped


def _revoke(conn: driver.Connection, granted: Sequence[ConfigTable], owner: str) -> None:
    for config in granted:
        revoking = sql.SQL(", ").join(sql.SQL(privilege) for privilege in config.granted)
        conn.execute(sql.SQL("REVOKE {} ON TABLE {} FROM {}").format(revoking, config.name, sql.Identifier(owner)))


_COPY = re.compile(rf"^COPY {_IDENT}\.{_IDENT} \(({_IDENT}(?:, {_IDENT})*)\) FROM stdin;$")


def _rows_from_the_dump(
    conn: driver.Connection,
    pg_restore: postgres.Program,
    archive: Path,
    pass_fds: Sequence[int],
    toc: str,
    skipped: Sequence[ConfigTable],
    *,
    in_place: str = "",
) -> None:
    """The dump's rows of a configuration table whose data entry is skipped (the database's copy belongs to
    someone else: a template's, or in place the target's own) must be there after the restore: those the
    database lacks are added over seeddump's connection where it may (a new database, which the caller drops
    when the restore fails), else the restore is refused in one line, before pg_restore. The rows are data: they
    go through COPY into a temporary table, and the dump's column names are quoted as identifiers."""
    for config in skipped:
        entry = re.compile(rf"^\d+; \d+ \d+ TABLE DATA {re.escape(config.schema)} {re.escape(config.table)} ")
        lines = [line for line in toc.splitlines() if entry.match(line)]
        if not lines:
            continue
        with tempfile.TemporaryDirectory(prefix="seeddump-toc-") as folder:
            only = Path(folder) / "data.list"
            only.write_text(f"{lines[0]}\n")
            script = _toc(pg_restore, archive, pass_fds, f"--use-list={only}", "--file=-").splitlines()
        start = next((i for i, line in enumerate(script) if _COPY.match(line)), None)
        if start is None:
            continue
        end = script.index("\\.", start) if "\\." in script[start:] else len(script)
        data = "".join(f"{line}\n" for line in script[start + 1 : end])
        if not data:
            continue
        columns = [_unquote(name) for name in re.findall(_IDENT, _COPY.match(script[start]).group(1))]  # type: ignore[union-attr]
        missing = _missing_rows(conn, config, columns, data, add=not in_place)
        if missing:
            where = f"'{in_place}'" if in_place else "the database made from SEEDDUMP_TEMPLATE"
            raise SeeddumpError(
                f"The dump holds rows of {config.schema}.{config.table} ({config.extension}'s configuration table, "
                f"where an administrator adds rows such as a custom SRID) that {where} lacks ({missing}), and "
                f"'{conn.info.user}' may not add them. Have an administrator add them there (or GRANT INSERT ON "
                f"{config.schema}.{config.table} TO {conn.info.user}), or restore over a superuser connection; "
                "nothing was changed."
            )


def _missing_rows(conn: driver.Connection, config: ConfigTable, columns: Sequence[str], data: str, *, add: bool) -> str:
    """The first column's values of the dump's rows (COPY text ``data``) that the table lacks, after adding them
    when ``add`` and the connecting role may; empty when none is missing."""
    listed = sql.SQL(", ").join(sql.Identifier(column) for column in columns)
    theirs = sql.SQL(", ").join(sql.Identifier("t", column) for column in columns)
    ours = sql.SQL(", ").join(sql.Identifier("r", column) for column in columns)
    lacking = sql.SQL(
        "FROM pg_temp.seeddump_dump_rows r WHERE NOT EXISTS (SELECT 1 FROM {} t WHERE ROW({})::text = ROW({})::text)"
    ).format(config.name, theirs, ours)
    try:
        with conn.transaction():
            make = sql.SQL("CREATE TEMPORARY TABLE pg_temp.seeddump_dump_rows (LIKE {}) ON COMMIT DROP")
            conn.execute(make.format(config.name))
            driver.copy_from(conn, sql.SQL("COPY pg_temp.seeddump_dump_rows ({}) FROM STDIN").format(listed), data)
            (may,) = conn.execute(
                "SELECT has_table_privilege(%s, 'INSERT')", (config.name.as_string(conn),)
            ).fetchone() or (False,)
            if add and may:
                conn.execute(sql.SQL("INSERT INTO {} ({}) SELECT {} ").format(config.name, listed, ours) + lacking)
            (missing,) = conn.execute(
                sql.SQL("SELECT string_agg({}::text, ', ') ").format(sql.Identifier("r", columns[0])) + lacking
            ).fetchone() or (None,)
    except driver.Error as exc:
        raise SeeddumpError(
            f"Could not compare the dump's rows of {config.schema}.{config.table} with the database's: "
            f"{postgres.first_line(str(exc))}; nothing was changed."
        ) from None
    return str(missing)[:200] if missing else ""


def _versions(recorded: Sequence[tuple[str, str, str]] | None) -> dict[str, str]:
    return {name: version for name, _schema, version in recorded or ()}


def _make(
    conn: driver.Connection,
    extension: Extension,
    owner: str,
    made_schemas: list[str],
    versions: Mapping[str, str],
    *,
    in_place: str = "",
) -> bool:
    """Makes ``extension`` in the database unless it holds it already; True when it made it. ``in_place``: the
    name of the database an in-place restore replaces (the refusals say what works there)."""
    if conn.execute("SELECT 1 FROM pg_extension WHERE extname = %s", (extension.name,)).fetchone():
        return False  # the database's template holds it (SEEDDUMP_TEMPLATE), or in place, the database itself
    available = conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = %s", (extension.name,)).fetchone()
    if not available:
        raise SeeddumpError(
            f"The dump needs the extension {extension.name}, which this server does not have (no such extension "
            "among its files). Install its package on the server (PostGIS on Debian: postgresql-<major>-postgis-3) "
            "and restore again; nothing was changed."
        )
    trusted = conn.execute(
        "SELECT bool_or(trusted) FROM pg_available_extension_versions WHERE name = %s", (extension.name,)
    ).fetchone()
    if not (trusted and trusted[0]) and extension.name not in conf.EXTENSIONS:
        # Its install script runs as seeddump's role, which may be a superuser: a dump (a teammate's file) does
        # not get to choose such code, only the project's settings do.
        raise SeeddumpError(
            f"The dump asks for the extension {extension.name}, which only a superuser may create, and seeddump "
            "makes such an extension for a dump only when SEEDDUMP_EXTENSIONS names it. Add it there if the "
            "project uses it; nothing was changed."
        )
    try:
        with conn.transaction():
            if not conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (extension.schema,)).fetchone():
                conn.execute(
                    sql.SQL("CREATE SCHEMA {} AUTHORIZATION {}").format(
                        sql.Identifier(extension.schema), sql.Identifier(owner)
                    )
                )
                made_schemas.append(extension.schema)
            create = sql.SQL("CREATE EXTENSION IF NOT EXISTS {} WITH SCHEMA {}").format(
                sql.Identifier(extension.name), sql.Identifier(extension.schema)
            )
            version = versions.get(extension.name)
            offered = "SELECT 1 FROM pg_available_extension_versions WHERE name = %s AND version = %s"
            if version and conn.execute(offered, (extension.name, version)).fetchone():
                create += sql.SQL(" VERSION {}").format(sql.Literal(version))
            conn.execute(create)
        return True
    except driver.errors.InsufficientPrivilege:
        role = conn.info.user
        if in_place:
            raise SeeddumpError(
                f"The dump needs the extension {extension.name}, which only a superuser may create on this server, "
                f"and '{role}' is not one. Restore over a superuser connection, or have an administrator create it "
                f"in '{in_place}' (CREATE EXTENSION {extension.name}), which an in-place restore then keeps; "
                "nothing was changed."
            ) from None
        raise SeeddumpError(
            f"The dump needs the extension {extension.name}, which only a superuser may create on this server, and "
            f"'{role}' is not one. Restore over a superuser connection, or have an administrator make a template "
            f"database that holds it (CREATE DATABASE template_{extension.name}; CREATE EXTENSION {extension.name} "
            f"there; ALTER DATABASE template_{extension.name} IS_TEMPLATE true) and set SEEDDUMP_TEMPLATE = "
            f"'template_{extension.name}' (or, where an administrator made it in the target database, restore with "
            "--in-place, which keeps it); nothing was changed."
        ) from None


@dataclass(frozen=True)
class KeptInPlace:
    """What an in-place restore keeps through its emptying of the database: ``keep``, the extensions it made or
    found (their objects stay, their configuration tables lose only the rows a user added), and pg_restore's
    extra arguments that skip the archive's entries for them."""

    keep: tuple[str, ...]
    restore_args: tuple[str, ...]


@contextmanager
def kept_in_place(
    pg_restore: postgres.Program,
    archive: Path,
    pass_fds: Sequence[int],
    settings_dict: Mapping[str, Any],
    database: str,
    owner: str,
    recorded: Sequence[tuple[str, str, str]] | None = None,
    committed: Callable[[], bool] = lambda: False,
) -> Iterator[KeptInPlace]:
    """For an in-place restore: makes the archive's extensions the database lacks, over seeddump's own
    connection (as ``made_beforehand`` does for a new database), and yields what the restore keeps. An in-place
    restore runs the dump as ``owner``, who may not create most extensions, so the extensions stay in the
    database (the target's own, or seeddump's) instead of being dropped and made again by the dump's SQL.

    When the restore fails (the body raises) and ``committed()`` says the load's transaction did not commit
    (an interruption can come after it has), what was made here is dropped again: the database is left as it
    was. When it did, or the server cannot tell, the extensions stay: the restored database needs them.
    SeeddumpError, before anything changed, when an extension can be neither found nor made. ``recorded``
    as for ``made_beforehand``."""
    if recorded == ():
        yield KeptInPlace((), ())
        return
    toc = listing(pg_restore, archive, pass_fds)
    needed = in_archive(pg_restore, archive, pass_fds, toc)
    if not needed:
        yield KeptInPlace((), ())
        return
    made: list[Extension] = []
    made_schemas: list[str] = []
    granted: list[ConfigTable] = []
    schemas = sorted({extension.schema for extension in needed})  # they stay: the dump must not make them
    failed = False
    try:
        with postgres.connect(settings_dict, database) as conn:
            for extension in needed:  # one that cannot be made takes away those made before it
                if _make(conn, extension, owner, made_schemas, _versions(recorded), in_place=database):
                    made.append(extension)
            granted, skipped = _config_tables(conn, needed, owner, privileges=("INSERT", "DELETE"))
            _rows_from_the_dump(conn, pg_restore, archive, pass_fds, toc, skipped, in_place=database)
        with tempfile.TemporaryDirectory(prefix="seeddump-toc-") as folder:
            use = Path(folder) / "restore.list"
            use.write_text(_skipped(toc, needed, schemas, [(config.schema, config.table) for config in skipped]))
            yield KeptInPlace(tuple(extension.name for extension in needed), (f"--use-list={use}",))
    except BaseException:
        failed = bool(made) and not _committed(committed)
        raise
    finally:
        if granted or (failed and made):
            with postgres.connect(settings_dict, database) as conn:
                _revoke(conn, granted, owner)
                for extension in reversed(made if failed else []):
                    conn.execute(sql.SQL("DROP EXTENSION IF EXISTS {}").format(sql.Identifier(extension.name)))
                for schema in made_schemas if failed else []:
                    conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {}").format(sql.Identifier(schema)))


def _committed(committed: Callable[[], bool]) -> bool:
    """``committed()``, or True when the server cannot say: an extension too many is better than one missing."""
    try:
        return committed()
    except (driver.Error, SeeddumpError):
        return True
