#!/usr/bin/python
# Copyright: TigerBeetle on bare metal maintainers
# Apache-2.0 (see galaxy.yml)
"""One module run writes every file of a role's entry point: the content comes rendered from the
controller (base64 in the module's arguments), so N files cost one SSH round trip instead of the
2-3 that each `copy` or `template` task costs (a stat, then the write, then the attributes).
rollout.yml stages every host at once through these runs, and a staging round trip on a loaded
host is about a second (bench/README.md)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: install_files
short_description: Write several files atomically in one run, each checked before it replaces the old one
description:
  - Runs the O(checks) first; any that fails ends the run before anything is written.
  - Then each entry of O(files) in order. A file whose content, mode, owner and group already match is left alone.
    A new content is written to a temporary file in the destination's directory (mode 0600 from its
    creation), given its owner, group and mode, checked with the entry's O(files[].validate) command,
    then renamed over the destination; a failed check removes the temporary file and ends the run, so
    the destination keeps its old content and the later entries are not written (a failed run still
    reports what it wrote before, in RV(written)).
  - A symbolic link at the destination is replaced by the file, never followed. In check mode, an owner or group
    that does not exist yet counts as a change.
  - An entry without O(files[].content) names the SHA-256 its destination must already have (a large file
    sent by another task, or copied on the host from O(files[].copy_from) when that file has it) or,
    without O(files[].sha256) either, a file that must exist (written by other means).
options:
  checks:
    description: Commands that must exit 0 before anything is written (skipped in check mode).
    type: list
    elements: dict
    default: []
    suboptions:
      argv:
        description: The command, as an argument vector (no shell).
        type: list
        elements: str
        required: true
      fail_msg:
        description: What the failure says, followed by the exit status.
        type: str
        required: true
  files:
    description: The files, written in this order.
    type: list
    elements: dict
    required: true
    suboptions:
      dest:
        description: Absolute path of the file.
        type: path
        required: true
      content:
        description: The file's content, base64 (never logged).
        type: str
      sha256:
        description: Without O(files[].content), the SHA-256 the destination must already have.
        type: str
      copy_from:
        description:
          - With O(files[].sha256), a file on the host to copy when the destination differs and this one has that
            SHA-256 (the active file a staged copy starts from), with no transfer from the controller.
        type: path
      mode:
        description: Octal mode, as a string (an unquoted YAML 0644 is taken as the number it became).
        type: raw
      owner:
        description: Owner's name.
        type: str
      group:
        description: Group's name.
        type: str
      validate:
        description: A command run on the temporary file before it replaces the destination; C(%s) is its path.
        type: str
      diff:
        description: Show the change with C(--diff) (never for secrets).
        type: bool
        default: false
      missing_msg:
        description: For a file that must exist, what the failure says when it does not.
        type: str
  pending_ok:
    description:
      - An entry with only O(files[].sha256) whose destination differs stops the run without failing. It and
        every later entry are returned in RV(pending); the caller sends that file, then runs again.
    type: bool
    default: false
author: TigerBeetle on bare metal maintainers
"""

RETURN = r"""
written:
  description: Destinations whose content or attributes changed (or would, in check mode).
  type: list
  returned: always
pending:
  description: With O(pending_ok), the destinations not handled because a file sent by another task differs, that one first.
  type: list
  returned: always
"""

import base64
import grp
import hashlib
import os
import pwd
import shlex
import shutil
import stat
import tempfile

from ansible.module_utils.basic import AnsibleModule

# A content larger than this goes through its own transfer (O(files[].sha256)); module arguments
# travel in the SSH session's stdin, and the role's files are kilobytes.
CONTENT_BYTES_MAX = 1024 * 1024
# How much of an old or new file --diff shows.
DIFF_BYTES_MAX = 64 * 1024
FILES_COUNT_MAX = 64
SHA256_READ_BYTES = 1024 * 1024


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while True:
            chunk = handle.read(SHA256_READ_BYTES)
            if not chunk:
                return digest.hexdigest()
            digest.update(chunk)


def mode_of(text):
    """An octal mode: a string of octal digits, or the int YAML made of an unquoted 0644."""
    if isinstance(text, int):
        return text
    try:
        return int(text, 8)
    except (TypeError, ValueError):
        return None


class Run:
    """One run: the module, and what it wrote so far (reported on failure too, so that the
    caller's handlers still learn what changed before the failing entry)."""

    def __init__(self, module):
        self.module = module
        self.result = {"changed": False, "written": [], "pending": [], "diff": []}

    def fail(self, msg, **more):
        written = self.result["written"]
        self.module.fail_json(msg=msg, changed=bool(written) and not self.module.check_mode,
                              written=written, **more)

    def command(self, argv, what):
        """Runs argv; (rc, out, err). A program that cannot run fails the run with `what`."""
        try:
            return self.module.run_command(argv, handle_exceptions=False)
        except OSError as error:
            self.fail(f"{what} (cannot run {argv[0]}: {error.strerror}).")

    def state(self, dest):
        """(sha256, mode, uid, gid) of a regular file; None when there is none, or a symbolic
        link (replaced by the rename, never followed: its target is not ours to change)."""
        try:
            info = os.lstat(dest)
        except FileNotFoundError:
            return None
        if stat.S_ISLNK(info.st_mode):
            return None
        if not stat.S_ISREG(info.st_mode):
            self.fail(f"{dest} exists and is not a regular file: it was left as it is, and "
                      "nothing after it was written.")
        return sha256_of(dest), stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid

    def ids(self, entry):
        """(uid, gid); None in check mode when one does not exist yet (a run that creates it
        comes first)."""
        try:
            return pwd.getpwnam(entry["owner"]).pw_uid, grp.getgrnam(entry["group"]).gr_gid
        except KeyError:
            if self.module.check_mode:
                return None
            self.fail(f"{entry['dest']}: no user {entry['owner']} or group {entry['group']} on "
                      "this host. Nothing after it was written.")

    def copy_source_matches(self, entry):
        """Whether the entry's copy_from exists on the host with the entry's sha256."""
        if not entry.get("copy_from"):
            return False
        source = self.state(entry["copy_from"])
        return source is not None and source[0] == entry["sha256"]

    def validate(self, entry, path):
        command = entry.get("validate")
        if not command:
            return
        argv = [word.replace("%s", path) for word in shlex.split(command)]
        what = f"{entry['dest']}: its check could not run, the file was not replaced"
        rc, out, err = self.command(argv, what)
        if rc != 0:
            self.fail(f"{entry['dest']}: its check failed (exit {rc}), the file was not replaced "
                      f"and nothing after it was written: {command}", stdout=out, stderr=err)

    def write(self, entry, data, mode, uid, gid):
        """Writes a temporary file beside the destination (0600 from its creation), checks it,
        renames it into place. data: the bytes, or None to copy the entry's copy_from."""
        dest = entry["dest"]
        directory = os.path.dirname(dest)
        if not os.path.isdir(directory):
            self.fail(f"{dest}: its directory does not exist; nothing after it was written.")
        handle, path = tempfile.mkstemp(prefix=f".{os.path.basename(dest)}.", dir=directory)
        try:
            with os.fdopen(handle, "wb") as out:
                if data is None:
                    with open(entry["copy_from"], "rb") as source:
                        shutil.copyfileobj(source, out, SHA256_READ_BYTES)
                else:
                    out.write(data)
                out.flush()
                os.fchown(out.fileno(), uid, gid)
                os.fchmod(out.fileno(), mode)
                os.fsync(out.fileno())
            if data is None and sha256_of(path) != entry["sha256"]:
                self.fail(f"{dest}: {entry['copy_from']} changed while it was copied; nothing "
                          "after it was written.")
            self.validate(entry, path)
            os.rename(path, dest)
        except BaseException:
            # fail() raises too: whatever ends the write, no temporary file stays behind.
            if os.path.lexists(path):
                os.unlink(path)
            raise
        directory_handle = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(directory_handle)
        finally:
            os.close(directory_handle)

    def check_provided(self, entry, state):
        """A file written by other means (a secret manager): it must be there, as it is."""
        if state is None and not self.module.check_mode:
            self.fail(entry.get("missing_msg") or f"{entry['dest']} does not exist.")

    def wanted(self, entry, state):
        """(bytes or None, same content) for the destination's `state`; None when the run stops
        here (a file sent by another task)."""
        dest = entry["dest"]
        if entry.get("content") is not None:
            data = base64.b64decode(entry["content"], validate=True)
            if len(data) > CONTENT_BYTES_MAX:
                self.fail(f"{dest}: {len(data)} bytes is more than {CONTENT_BYTES_MAX}; send it "
                          "with its own task and give its sha256 here")
            return data, state is not None and state[0] == hashlib.sha256(data).hexdigest()
        # A large file: sent by another task, or copied from a file of the host that has it.
        same = state is not None and state[0] == entry["sha256"]
        if same or self.copy_source_matches(entry) or self.module.check_mode:
            # Check mode: the other task would send it, and the later entries are judged as if.
            return None, same
        if self.module.params["pending_ok"]:
            return None
        self.fail(f"{dest} does not have SHA-256 {entry['sha256']}: it should have been sent "
                  "before this run. Nothing after it was written.")

    def install(self, entry):
        """Handles one entry; False when the run stops here (a file sent by another task)."""
        dest = entry["dest"]
        assert os.path.isabs(dest), dest
        if entry.get("content") is None and entry.get("sha256") is None:
            self.check_provided(entry, self.state(dest))
            return True
        mode = mode_of(entry.get("mode"))
        if mode is None or entry.get("owner") is None or entry.get("group") is None:
            self.fail(f"{dest}: an octal mode, an owner and a group are required")
        state = self.state(dest)
        wanted = self.wanted(entry, state)
        if wanted is None:
            return False
        data, same_content = wanted
        ids = self.ids(entry)
        if same_content and ids is not None and state[1:] == (mode, *ids):
            return True
        self.result["written"].append(dest)
        if self.module._diff and entry["diff"] and data is not None and not same_content:
            self.result["diff"].append(diff_of(entry, state is not None, data))
        if self.module.check_mode:
            return True
        if same_content:
            # The same bytes in a regular file: only the attributes change, in place.
            os.chown(dest, *ids, follow_symlinks=False)
            os.chmod(dest, mode)
        else:
            try:
                self.write(entry, data, mode, *ids)
            except OSError as error:
                # A full disk, say: said with what was written before it, for the handlers.
                self.fail(f"{dest}: could not be written ({error}); nothing after it was written.")
        return True

    def run_checks(self):
        if self.module.check_mode:
            return
        for check in self.module.params["checks"]:
            rc, out, err = self.command(check["argv"], check["fail_msg"])
            if rc != 0:
                self.fail(f"{check['fail_msg']} (exit {rc}). Nothing was written.",
                          stdout=out, stderr=err)


def diff_of(entry, old_path_exists, data):
    def text(raw):
        try:
            return raw[:DIFF_BYTES_MAX].decode("utf-8")
        except UnicodeDecodeError:
            return "(binary)\n"

    before = ""
    if old_path_exists:
        with open(entry["dest"], "rb") as handle:
            before = text(handle.read(DIFF_BYTES_MAX))
    return {"before_header": entry["dest"], "after_header": entry["dest"],
            "before": before, "after": text(data)}


def main():
    module = AnsibleModule(
        argument_spec={
            "checks": {"type": "list", "elements": "dict", "default": [], "options": {
                "argv": {"type": "list", "elements": "str", "required": True},
                "fail_msg": {"type": "str", "required": True},
            }},
            "files": {"type": "list", "elements": "dict", "required": True, "options": {
                "dest": {"type": "path", "required": True},
                "content": {"type": "str", "no_log": True},
                "sha256": {"type": "str"},
                "copy_from": {"type": "path"},
                "mode": {"type": "raw"},
                "owner": {"type": "str"},
                "group": {"type": "str"},
                "validate": {"type": "str"},
                "diff": {"type": "bool", "default": False},
                "missing_msg": {"type": "str"},
            }},
            "pending_ok": {"type": "bool", "default": False},
        },
        supports_check_mode=True,
    )
    files = module.params["files"]
    if len(files) > FILES_COUNT_MAX:
        module.fail_json(msg=f"{len(files)} files is more than {FILES_COUNT_MAX} in one run")
    run = Run(module)
    run.run_checks()
    for index, entry in enumerate(files):
        if not run.install(entry):
            run.result["pending"] = [later["dest"] for later in files[index:]]
            break
    run.result["changed"] = bool(run.result["written"])
    module.exit_json(**run.result)


if __name__ == "__main__":
    main()
