#!/usr/bin/env python3
"""A reader of a Rewind backup repository, written from docs/repository-format.md alone.

Nothing in here was taken from the Rust implementation (src/): it exists to prove that
the format document is enough to read a repository back from scratch. The integration
test tests/reader_from_spec.rs writes repositories with the real `rewind` binary and
reads them back with this script.

Usage:
    read_stream.py REPO_DIR ls                     one line per snapshot: id, then stream names
    read_stream.py REPO_DIR cat SNAPSHOT_ID STREAM the stream's bytes on standard output

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

    def cat(self, snapshot_id, stream_name, out):
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
                out.write(data)
        finally:
            for file in pack_files.values():
                file.close()
        if total != size:
            raise Refused(f"stream {stream_name!r}: {total} bytes, the manifest says {size}")
        if digest.hexdigest() != sha256.lower():
            raise Refused(f"stream {stream_name!r}: SHA-256 {digest.hexdigest()} != recorded {sha256}")
        out.flush()


def main(argv):
    usage = "usage: read_stream.py REPO_DIR ls | read_stream.py REPO_DIR cat SNAPSHOT_ID STREAM"
    if len(argv) < 3 or argv[2] not in ("ls", "cat") or (argv[2] == "ls" and len(argv) != 3) or (
        argv[2] == "cat" and len(argv) != 5
    ):
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
        else:
            repo.cat(argv[3], argv[4], sys.stdout.buffer)
    except Refused as refused:
        sys.stdout.flush()
        print(f"read_stream.py: refused: {refused}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
