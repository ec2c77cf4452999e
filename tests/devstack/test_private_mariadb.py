"""The throwaway MariaDB servers of the suites keep their temporary files to themselves: a server
deletes every `#sql*` file of its tmpdir when it starts, so a shared /tmp let one test process's
server, as it started, delete the temporary tables of the servers the others were using
(devstack/private_mariadb.py)."""

from __future__ import annotations

import sqlalchemy as sa

from devstack.private_mariadb import PrivateMariaDB


def test_a_private_server_has_a_tmpdir_of_its_own(binlog_maria: PrivateMariaDB) -> None:
    binlog_maria.assert_running()
    with binlog_maria.admin_engine().connect() as conn:
        tmpdir = conn.execute(sa.text("SELECT @@tmpdir")).scalar_one()
    assert tmpdir == str(binlog_maria.base / "tmp")
