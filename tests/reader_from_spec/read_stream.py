#!/usr/bin/env python3
"""A reader of a Rewind backup repository, written from docs/repository-format.md alone.

Nothing in here was taken from the Rust implementation (src/): it exists to prove that
the format document is enough to read a repository back from scratch. The integration
test tests/reader_from_spec.rs writes repositories with the real `rewind` binary and
reads them back with this script.

Usage:
    read_stream.py REPO_DIR ls                     one line per snapshot: id, then stream names
    read_stream.py REPO_DIR cat SNAPSHOT_ID STREAM the stream's bytes on standard output
    read_stream.py REPO_DIR tree-ls SNAPSHOT_ID STREAM
                                                   a tree stream's entries, one JSON object a
                                                   line (paths, targets, xattr values in hex)
    read_stream.py REPO_DIR tree-extract SNAPSHOT_ID STREAM DIR
                                                   recreates a tree stream's files under DIR

REPO_DIR is the directory of a `file://` repository (a `file://` prefix is accepted).
The master key comes from the environment variable REWIND_REPO_KEY: 64 hex characters
are the key itself, any other text of at least 16 characters is a passphrase.

Everything the document says a reader must check is checked: every AEAD tag with the
right associated data, every chunk's keyed hash against its id, the zstd frames, the
stream's size and SHA-256, and every `version` field. Any mismatch ends the program
with exit status 1 and a message on standard error that names what is wrong.

Needs the PyPI packages pynacl, blake3 and zstandard (requirements.txt beside this file).
"""

import base64
import hashlib
import json
import os
import re
import stat
import sys

try:
    import blake3
    import zstandard
    from nacl.bindings import crypto_aead_xchacha20poly1305_ietf_decrypt
    from nacl.exceptions import CryptoError
except ImportError as missing:  # pragma: no cover - environment problem
    sys.exit(f"read_stream.py: missing Python package ({missing}); pip install -r requirements.txt")

NONCE_LEN = 24
TAG_LEN = 16
KEY_CONTEXT = "rewind.dev repository master key v1"
WRAPPED_KEYS_AAD = b"rewind-repository-keys-v1"
HEX64 = re.compile(r"^[0-9a-f]{64}$")
SNAPSHOT_ID = re.compile(r"^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{8}$")


class Refused(Exception):
    """The repository, or the key, does not pass a check the format document asks for."""


# --- primitives ----------------------------------------------------------------------


def open_sealed(key, aad, sealed, what):
    """seal(key, context, plaintext) = nonce(24) ‖ XChaCha20-Poly1305(ciphertext ‖ tag(16))."""
    if len(sealed) < NONCE_LEN + TAG_LEN:
        raise Refused(f"{what}: {len(sealed)} bytes is too short to be sealed")
    nonce, ciphertext = sealed[:NONCE_LEN], sealed[NONCE_LEN:]
    try:
        return crypto_aead_xchacha20poly1305_ietf_decrypt(ciphertext, aad, nonce, key)
    except CryptoError:
        raise Refused(f"{what}: authentication failed (damaged, swapped, or the wrong key)") from None


def unzstd(frame, what, expected_len=None):
    """Decompress exactly one complete zstd frame (the frame may omit its content size)."""
    try:
        dobj = zstandard.ZstdDecompressor().decompressobj()
        out = dobj.decompress(frame)
    except zstandard.ZstdError as error:
        raise Refused(f"{what}: not a valid zstd frame ({error})") from None
    if not dobj.eof:
        raise Refused(f"{what}: zstd frame is truncated")
    if dobj.unused_data:
        raise Refused(f"{what}: {len(dobj.unused_data)} bytes after the zstd frame")
    if expected_len is not None and len(out) != expected_len:
        raise Refused(f"{what}: decompressed to {len(out)} bytes, expected {expected_len}")
    return out


def parse_json(data, what):
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        raise Refused(f"{what}: not valid JSON ({error})") from None
    if not isinstance(value, dict):
        raise Refused(f"{what}: JSON is not an object")
    return value


def require_version(doc, what):
    version = doc.get("version")
    if version != 1 or isinstance(version, bool):
        raise Refused(f"{what}: version {version!r} is not supported (only 1)")


# Unicode White_Space: what is trimmed from both ends of the key text. (Python's
# str.strip() would also strip U+001C..U+001F, which are not White_Space.)
WHITE_SPACE = "\t\n\x0b\x0c\r \x85\xa0\u1680" + "".join(map(chr, range(0x2000, 0x200B))) + "\u2028\u2029\u202f\u205f\u3000"


def master_key_from_text(text):
    """Trimmed text: 64 hex characters (either case) are the key; any other text of at
    least 16 UTF-8 bytes is BLAKE3-derive_key(context, its UTF-8 bytes)."""
    text = text.strip(WHITE_SPACE)
    if HEX64.fullmatch(text.lower()):
        return bytes.fromhex(text)
    material = text.encode("utf-8")
    if len(material) < 16:
        raise Refused("REWIND_REPO_KEY: a passphrase must be at least 16 bytes long (UTF-8, after trimming)")
    return blake3.blake3(material, derive_key_context=KEY_CONTEXT).digest()


# --- the repository ------------------------------------------------------------------


class Repository:
    def __init__(self, root, key_text):
        self.root = root
        config = self._read_config()
        master = master_key_from_text(key_text)
        try:
            wrapped = base64.b64decode(config["wrapped_keys"], validate=True)
        except (KeyError, TypeError, ValueError):
            raise Refused("config: wrapped_keys is missing or not base64") from None
        try:
            keys = open_sealed(master, WRAPPED_KEYS_AAD, wrapped, "config wrapped_keys")
        except Refused:
            raise Refused("the master key does not open this repository (config wrapped_keys fail authentication)") from None
        if len(keys) != 64:
            raise Refused(f"config: the unwrapped keys are {len(keys)} bytes, expected 64")
        self.encryption_key = keys[:32]
        self.chunk_id_key = keys[32:]
        self._locations = None

    def _path(self, name):
        return os.path.join(self.root, *name.split("/"))

    def _read(self, name):
        try:
            with open(self._path(name), "rb") as file:
                return file.read()
        except FileNotFoundError:
            raise Refused(f"{name}: missing") from None

    def _read_config(self):
        config = parse_json(self._read("config"), "config")
        if config.get("format") != "rewind-repository":
            raise Refused(f"config: format {config.get('format')!r} is not 'rewind-repository'")
        require_version(config, "config")
        return config

    def _open_object(self, name):
        """index/… and snapshots/…: seal(encryption key, name, zstd(JSON))."""
        sealed = self._read(name)
        plain = open_sealed(self.encryption_key, name.encode("utf-8"), sealed, name)
        doc = parse_json(unzstd(plain, name), name)
        require_version(doc, name)
        return doc

    def snapshot_ids(self):
        try:
            names = os.listdir(self._path("snapshots"))
        except FileNotFoundError:
            return []
        return sorted(names)  # every name under snapshots/ is a snapshot id

    def manifest(self, snapshot_id):
        if not SNAPSHOT_ID.fullmatch(snapshot_id):
            raise Refused(f"{snapshot_id!r} is not a snapshot id (YYYYMMDDTHHMMSSZ-xxxxxxxx)")
        name = f"snapshots/{snapshot_id}"
        if not os.path.isfile(self._path(name)):
            raise Refused(f"snapshot {snapshot_id} does not exist")
        doc = self._open_object(name)
        if doc.get("id") != snapshot_id:
            raise Refused(f"{name}: the manifest says it is snapshot {doc.get('id')!r}")
        streams = doc.get("streams")
        if not isinstance(streams, list) or not all(isinstance(s, dict) for s in streams):
            raise Refused(f"{name}: no streams list")
        names = [s.get("name") for s in streams]
        if len(set(map(str, names))) != len(names):
            raise Refused(f"{name}: stream names are not unique")
        return doc

    def locations(self):
        """chunk id (hex) -> [(pack id, offset, length, raw_length)], from every index/*."""
        if self._locations is not None:
            return self._locations
        locations = {}
        try:
            names = sorted(os.listdir(self._path("index")))
        except FileNotFoundError:
            names = []
        for pack in names:
            name = f"index/{pack}"
            if not HEX64.fullmatch(pack):
                raise Refused(f"{name}: not named after a pack id")
            doc = self._open_object(name)
            if doc.get("pack") != pack:
                raise Refused(f"{name}: the index says it describes pack {doc.get('pack')!r}")
            for blob in doc.get("blobs", []):
                try:
                    chunk, offset, length, raw = blob["id"], blob["offset"], blob["length"], blob["raw_length"]
                except (KeyError, TypeError):
                    raise Refused(f"{name}: malformed blob entry {blob!r}") from None
                if not HEX64.fullmatch(str(chunk)) or not all(
                    isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in (offset, length, raw)
                ):
                    raise Refused(f"{name}: malformed blob entry {blob!r}")
                locations.setdefault(chunk, []).append((pack, offset, length, raw))
        self._locations = locations
        return locations

    def chunk(self, chunk_hex, pack_files):
        """One chunk's plaintext, authenticated and checked against its id."""
        found = self.locations().get(chunk_hex)
        if not found:
            raise Refused(f"chunk {chunk_hex}: in no index")
        pack, offset, length, raw_length = found[0]  # any location is valid
        what = f"chunk {chunk_hex} (pack {pack}, offset {offset}, length {length})"
        file = pack_files.get(pack)
        if file is None:
            try:
                file = open(self._path(f"packs/{pack[:2]}/{pack}"), "rb")
            except FileNotFoundError:
                raise Refused(f"{what}: pack packs/{pack[:2]}/{pack} is missing") from None
            pack_files[pack] = file
        file.seek(offset)
        sealed = file.read(length)
        if len(sealed) != length:
            raise Refused(f"{what}: the pack ends before the blob does")
        chunk_id = bytes.fromhex(chunk_hex)
        plain = open_sealed(self.encryption_key, chunk_id, sealed, what)
        if not plain:
            raise Refused(f"{what}: empty blob (no flag byte)")
        flag, body = plain[0], plain[1:]
        if flag == 0:
            data = body
        elif flag == 1:
            data = unzstd(body, what)
        else:
            raise Refused(f"{what}: unknown flag byte {flag}")
        if len(data) != raw_length:
            raise Refused(f"{what}: {len(data)} bytes, the index says raw_length {raw_length}")
        if blake3.blake3(data, key=self.chunk_id_key).digest() != chunk_id:
            raise Refused(f"{what}: content does not hash to its id")
        return data

    def chunks(self, snapshot_id, stream_name):
        """The stream's chunks in order, every check done; the last check (size, SHA-256)
        after the last chunk."""
        doc = self.manifest(snapshot_id)
        matches = [s for s in doc["streams"] if s.get("name") == stream_name]
        if not matches:
            raise Refused(f"snapshot {snapshot_id} has no stream {stream_name!r}")
        stream = matches[0]
        size, sha256, chunks = stream.get("size"), stream.get("sha256"), stream.get("chunks")
        if not isinstance(size, int) or not isinstance(sha256, str) or not isinstance(chunks, list):
            raise Refused(f"snapshot {snapshot_id} stream {stream_name!r}: malformed entry")
        digest = hashlib.sha256()
        total = 0
        pack_files = {}
        try:
            for chunk_hex in chunks:
                if not isinstance(chunk_hex, str) or not HEX64.fullmatch(chunk_hex):
                    raise Refused(f"stream {stream_name!r}: malformed chunk id {chunk_hex!r}")
                data = self.chunk(chunk_hex, pack_files)
                total += len(data)
                if total > size:
                    raise Refused(f"stream {stream_name!r}: longer than its recorded size {size}")
                digest.update(data)
                yield data
        finally:
            for file in pack_files.values():
                file.close()
        if total != size:
            raise Refused(f"stream {stream_name!r}: {total} bytes, the manifest says {size}")
        if digest.hexdigest() != sha256.lower():
            raise Refused(f"stream {stream_name!r}: SHA-256 {digest.hexdigest()} != recorded {sha256}")

    def cat(self, snapshot_id, stream_name, out):
        for data in self.chunks(snapshot_id, stream_name):
            out.write(data)
        out.flush()


# --- tree streams ("Tree streams (a volume's files)") ----------------------------------

TREE_MAGIC = b"RWTREE1\n"
TREE_KINDS = set(b"DFLHPCB")
# The document's limits, by the names it gives them.
XATTRS_MAX = 4096
XATTR_BYTES_MAX = 1 << 20
EXTENTS_MAX = 1 << 16
DEVICE_MAJOR_MAX = (1 << 12) - 1
DEVICE_MINOR_MAX = (1 << 20) - 1


class TreeStream:
    """Reads a tree stream's records from an iterator of byte strings, enforcing every rule
    the document states: paths, order, parents, extents, sizes and the end record."""

    def __init__(self, chunks):
        self.chunks = iter(chunks)
        self.buffer = b""
        self.at = 0
        self.entries = 0
        self.data_bytes = 0
        self.open_dirs = []  # [path, last child name]

    def refuse(self, reason):
        raise Refused(f"tree stream, entry {self.entries}: {reason}")

    def take(self, n):
        while len(self.buffer) - self.at < n:
            try:
                more = next(self.chunks)
            except StopIteration:
                self.refuse("the stream ends in the middle of a record (no end record)")
            self.buffer = self.buffer[self.at:] + more
            self.at = 0
        out = self.buffer[self.at:self.at + n]
        self.at += n
        return out

    def at_end(self):
        while len(self.buffer) - self.at == 0:
            try:
                self.buffer, self.at = next(self.chunks), 0
            except StopIteration:
                return True
        return False

    def varint(self):
        value = 0
        for i in range(10):
            byte = self.take(1)[0]
            value |= (byte & 0x7F) << (7 * i)
            if not byte & 0x80:
                if value >= 1 << 64:
                    self.refuse("a varint overflows 64 bits")
                return value
        self.refuse("a varint is longer than 10 bytes")

    def bytes_(self, limit, what):
        n = self.varint()
        if n > limit:
            self.refuse(f"{what} of {n} bytes exceeds {limit}")
        return self.take(n)

    def check_path(self, path):
        if path == b"":
            return
        if len(path) > 4096:
            self.refuse("a path longer than 4096 bytes")
        for name in path.split(b"/"):
            if name in (b"", b".", b"..") or b"\0" in name or len(name) > 255:
                self.refuse(f"bad path {path!r}")

    def records(self):
        """Yields (entry dict, data reader) per entry; a file's data must be read in full
        through the reader (read(n) until it returns b"") before the next record."""
        if self.take(8) != TREE_MAGIC:
            self.refuse("not a tree stream (wrong magic)")
        while True:
            kind = self.take(1)
            if kind == b"E":
                entries, data_bytes = self.varint(), self.varint()
                if (entries, data_bytes) != (self.entries, self.data_bytes):
                    self.refuse(f"the end record says {entries} entries, {data_bytes} bytes; "
                                f"the stream held {self.entries}, {self.data_bytes}")
                if self.entries == 0:
                    self.refuse("no root directory")
                if not self.at_end():
                    self.refuse("bytes after the end record")
                return
            if kind[0] not in TREE_KINDS:
                self.refuse(f"unknown record kind {kind!r}")
            path = self.bytes_(4096, "a path")
            self.check_path(path)
            entry = {"kind": kind.decode(), "path": path}
            entry["mode"] = self.varint()
            entry["uid"] = self.varint()
            entry["gid"] = self.varint()
            zz = self.varint()
            entry["mtime"] = [(zz >> 1) ^ -(zz & 1), self.varint()]
            if entry["mode"] > 0o7777 or entry["uid"] >= 1 << 32 or entry["gid"] >= 1 << 32 or entry["mtime"][1] >= 10**9:
                self.refuse("mode, owner or nanoseconds out of range")
            count = self.varint()
            if count > XATTRS_MAX:
                self.refuse(f"{count} extended attributes")
            xattrs, xattr_bytes = [], 0
            for _ in range(count):
                name, value = self.bytes_(255, "an xattr name"), self.bytes_(65536, "an xattr value")
                if not name or b"\0" in name or (xattrs and xattrs[-1][0] >= name):
                    self.refuse("xattr names empty, with NUL, unsorted or repeated")
                xattr_bytes += len(name) + len(value)
                if xattr_bytes > XATTR_BYTES_MAX:
                    self.refuse(f"more than {XATTR_BYTES_MAX} bytes of extended attributes")
                xattrs.append((name, value))
            entry["xattrs"] = xattrs
            data_len = 0
            if kind == b"F":
                size, n = self.varint(), self.varint()
                if n > EXTENTS_MAX:
                    self.refuse(f"{n} extents (at most {EXTENTS_MAX})")
                extents, end = [], 0
                for _ in range(n):
                    offset, length = self.varint(), self.varint()
                    if length == 0 or offset < end or offset + length > size:
                        self.refuse("extents empty, unsorted, overlapping or beyond the size")
                    end = offset + length
                    extents.append((offset, length))
                entry["size"], entry["extents"] = size, extents
                data_len = sum(length for _, length in extents)
            elif kind in (b"L", b"H"):
                entry["target"] = self.bytes_(4096, "a link target")
                if kind == b"H":
                    self.check_path(entry["target"])
                    if entry["target"] in (b"", path):
                        self.refuse("a hardlink to the root or to itself")
            elif kind in (b"C", b"B"):
                entry["major"], entry["minor"] = self.varint(), self.varint()
                if entry["major"] > DEVICE_MAJOR_MAX or entry["minor"] > DEVICE_MINOR_MAX:
                    self.refuse(f"device number {entry['major']}:{entry['minor']} is out of range")
            self.place(entry)
            self.entries += 1
            self.data_bytes += data_len
            remaining = [data_len]

            def read(n, remaining=remaining):
                n = min(n, remaining[0])
                remaining[0] -= n
                return self.take(n) if n else b""

            yield entry, read
            while remaining[0]:
                read(1 << 20)

    def place(self, entry):
        path = entry["path"]
        if path == b"":
            if self.entries != 0 or entry["kind"] != "D":
                self.refuse("the empty path is only for the root directory, first")
            self.open_dirs.append([b"", None])
            return
        if self.entries == 0:
            self.refuse("the first entry must be the root directory")
        parent, _, name = path.rpartition(b"/")
        while self.open_dirs and self.open_dirs[-1][0] != parent:
            self.open_dirs.pop()
        if not self.open_dirs:
            self.refuse(f"{path!r} does not follow its parent directory")
        last = self.open_dirs[-1][1]
        if last is not None and last >= name:
            self.refuse(f"{path!r} is not after its previous sibling in name order")
        self.open_dirs[-1][1] = name
        if entry["kind"] == "D":
            self.open_dirs.append([path, None])


def tree_ls(chunks, out):
    for entry, read in TreeStream(chunks).records():
        while read(1 << 20):
            pass
        shown = dict(entry)
        shown["path"] = entry["path"].hex()
        if "target" in entry:
            shown["target"] = entry["target"].hex()
        shown["xattrs"] = {name.decode("utf-8", "surrogateescape"): value.hex() for name, value in entry["xattrs"]}
        out.write((json.dumps(shown, sort_keys=True) + "\n").encode())


def tree_extract(chunks, target):
    """Recreates the tree under target as the document's "Restoring" paragraph says."""
    root = os.fsencode(target)
    os.makedirs(root, exist_ok=True)
    as_root = os.geteuid() == 0
    directories = []

    def set_xattrs(path, entry, fd=None):
        for name, value in entry["xattrs"]:
            try:
                if fd is not None:
                    os.setxattr(fd, name, value)
                else:
                    os.setxattr(path, name, value, follow_symlinks=False)
            except OSError:
                pass  # the target file system refuses it: skipped, as the document allows

    def times(entry):
        ns = entry["mtime"][0] * 10**9 + entry["mtime"][1]
        return (ns, ns)

    for entry, read in TreeStream(chunks).records():
        kind = entry["kind"]
        path = os.path.join(root, entry["path"]) if entry["path"] else root
        if kind == "D":
            if entry["path"]:
                try:
                    os.mkdir(path, 0o700)
                except FileExistsError:
                    if not stat.S_ISDIR(os.lstat(path).st_mode):
                        raise Refused(f"{path!r} exists and is not a directory")
            if as_root:
                os.chown(path, entry["uid"], entry["gid"], follow_symlinks=False)
            set_xattrs(path, entry)
            directories.append((path, entry))
        elif kind == "F":
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            try:
                for offset, length in entry["extents"]:
                    at = offset
                    while at < offset + length:
                        data = read(min(1 << 20, offset + length - at))
                        os.pwrite(fd, data, at)
                        at += len(data)
                os.ftruncate(fd, entry["size"])
                if as_root:
                    os.fchown(fd, entry["uid"], entry["gid"])
                os.fchmod(fd, entry["mode"])
                set_xattrs(path, entry, fd)
                os.utime(fd, ns=times(entry))
            finally:
                os.close(fd)
        elif kind == "L":
            os.symlink(entry["target"], path)
            if as_root:
                os.chown(path, entry["uid"], entry["gid"], follow_symlinks=False)
            set_xattrs(path, entry)
            os.utime(path, ns=times(entry), follow_symlinks=False)
        elif kind == "H":
            original = root
            names = entry["target"].split(b"/")
            for i, name in enumerate(names):
                original = os.path.join(original, name)
                mode = os.lstat(original).st_mode
                if not (stat.S_ISREG(mode) if i == len(names) - 1 else stat.S_ISDIR(mode)):
                    raise Refused(f"hardlink target {entry['target']!r} is not a file restored before it")
            os.link(original, path, follow_symlinks=False)
        else:  # P, C, B
            if kind == "P":
                os.mkfifo(path, 0o600)
            else:
                device = os.makedev(entry["major"], entry["minor"])
                try:
                    os.mknod(path, 0o600 | (stat.S_IFCHR if kind == "C" else stat.S_IFBLK), device)
                except PermissionError:
                    continue  # devices need root: skipped
            if as_root:
                os.chown(path, entry["uid"], entry["gid"], follow_symlinks=False)
            os.chmod(path, entry["mode"])
            set_xattrs(path, entry)
            os.utime(path, ns=times(entry), follow_symlinks=False)
    for path, entry in reversed(directories):
        os.chmod(path, entry["mode"])
        os.utime(path, ns=times(entry), follow_symlinks=False)


def main(argv):
    usage = ("usage: read_stream.py REPO_DIR ls | read_stream.py REPO_DIR cat|tree-ls SNAPSHOT_ID STREAM"
             " | read_stream.py REPO_DIR tree-extract SNAPSHOT_ID STREAM DIR")
    arity = {"ls": 3, "cat": 5, "tree-ls": 5, "tree-extract": 6}
    if len(argv) < 3 or arity.get(argv[2]) != len(argv):
        print(usage, file=sys.stderr)
        return 2
    root = argv[1]
    if root.startswith("file://"):
        root = root[len("file://"):]
    key_text = os.environ.get("REWIND_REPO_KEY")
    if not key_text:
        print("read_stream.py: set REWIND_REPO_KEY to the master key", file=sys.stderr)
        return 2
    try:
        repo = Repository(root, key_text)
        if argv[2] == "ls":
            for snapshot_id in repo.snapshot_ids():
                doc = repo.manifest(snapshot_id)
                names = [s.get("name") for s in doc["streams"]]
                print("\t".join([snapshot_id, *map(str, names)]))
        elif argv[2] == "cat":
            repo.cat(argv[3], argv[4], sys.stdout.buffer)
        elif argv[2] == "tree-ls":
            tree_ls(repo.chunks(argv[3], argv[4]), sys.stdout.buffer)
            sys.stdout.flush()
        else:
            tree_extract(repo.chunks(argv[3], argv[4]), argv[5])
    except Refused as refused:
        sys.stdout.flush()
        print(f"read_stream.py: refused: {refused}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
