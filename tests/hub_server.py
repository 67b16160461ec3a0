"""A small Hub-compatible HTTP server for tests, on 127.0.0.1: just the endpoints the huggingface_hub
client uses to create a model repo and a branch, upload (regular files inline in the commit, large
files through the git-LFS batch API with the basic transfer), and read it back (repo info, tree,
resolve), for model repos and (read side only, ``add_dataset``) dataset repos. Repos live in memory.
The client's Xet upload path needs Xet storage, which this server does not speak: tests set the
client's own ``HF_HUB_DISABLE_XET`` switch, so it uses git-LFS.

Failures are injected with ``server.fail = (status, path_fragment)``: requests whose path contains
the fragment get ``status``, or a dropped connection when ``status`` is 0. ``server.token`` set:
write requests need ``Authorization: Bearer <token>``, and any request bearing another token gets 401, as
the Hub answers an invalid token even on a public read.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

LFS_THRESHOLD = 10_000  # larger files are LFS files (like *.safetensors on the Hub)


def git_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class Repo:
    def __init__(self, private: bool = False):
        self.private = private
        self.refs: dict[str, str] = {}  # branch -> commit
        self.snapshots: dict[str, dict[str, bytes]] = {}  # commit -> files
        self.messages: dict[str, str] = {}
        self.any_revision = False  # set by HubServer.any_revision: a mirror that answers any revision

    def commit(
        self, files: dict[str, bytes], branch: str = "main", message: str = "", deleted: tuple[str, ...] = ()
    ) -> str:
        parent = self.snapshots.get(self.refs.get(branch, ""), {})
        tree = {k: v for k, v in parent.items() if k not in deleted} | files
        sha = hashlib.sha1(
            json.dumps([branch, len(self.snapshots), sorted((k, git_oid(v)) for k, v in tree.items())]).encode()
        ).hexdigest()
        self.snapshots[sha], self.refs[branch], self.messages[sha] = tree, sha, message
        return sha

    def resolve(self, rev: str) -> str | None:
        found = self.refs.get(rev) or (rev if rev in self.snapshots else None)
        if found is None and self.any_revision:  # the hostile mirror: any revision string is main
            return self.refs.get("main")
        return found


class HubServer:
    def __init__(self):
        self.repos: dict[str, Repo] = {}
        self.lfs: dict[str, bytes] = {}  # sha256 -> content
        self.fail: tuple[int, str] | None = None
        self.token: str | None = None
        self.requests: list[tuple[str, str]] = []
        self.lfs_uploads = 0
        self.card_metadata: dict | None = None  # the last model card metadata validated
        self._srv = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._srv.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._srv.server_port}"

    def add_folder(self, repo_id: str, folder: Path, any_revision: bool = False) -> str:
        """A repo holding ``folder``'s files on main; ``any_revision``: it answers any revision string
        (``@../../x`` included) with main, as a hostile or careless mirror may."""
        repo = self.repos.setdefault(repo_id, Repo())
        repo.any_revision = any_revision
        return repo.commit(
            {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
        )

    def add_dataset(self, repo_id: str, files: dict[str, bytes], branch: str = "main") -> str:
        """A dataset repo (``hf://datasets/<repo_id>``) holding ``files`` (path in the repo -> bytes) on
        ``branch``; returns the commit id."""
        repo = self.repos.setdefault(f"datasets/{repo_id}", Repo())
        return repo.commit(files, branch)

    def __enter__(self) -> HubServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._srv.shutdown()
        self._srv.server_close()

    def _handler(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            # ------------------------------------------------------------------------ replies
            def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _json(self, status: int, obj) -> None:
                self._send(status, json.dumps(obj).encode(), {"Content-Type": "application/json"})

            def _error(self, status: int, message: str, code: str | None = None) -> None:
                code = code or {401: "RepoNotFound", 404: "RepoNotFound"}.get(status)
                headers = {"Content-Type": "application/json", "X-Error-Message": message}
                if code:
                    headers["X-Error-Code"] = code
                self._send(status, json.dumps({"error": message}).encode(), headers)

            def _body(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            # ------------------------------------------------------------------------ routing
            def _route(self) -> None:
                hub.requests.append((self.command, self.path))
                if hub.fail and hub.fail[1] in self.path:
                    self._body()
                    if hub.fail[0] == 0:
                        self.close_connection = True
                        self.connection.shutdown(2)
                        return
                    return self._error(hub.fail[0], f"injected {hub.fail[0]}")
                path = unquote(urlparse(self.path).path)
                parts = path.strip("/").split("/")
                write = self.command == "POST"  # PUT goes to the LFS upload URL, pre-signed on the real Hub
                auth = self.headers.get("Authorization")
                wrong = auth is not None and auth != f"Bearer {hub.token}"  # the Hub refuses a bad token, reads too
                if hub.token and (wrong or (write and auth is None)) and parts[0] != "lfs-upload":
                    self._body()
                    return self._error(401, "Invalid credentials in Authorization header", code="Unauthorized")
                if self.command == "POST" and path == "/api/repos/create":
                    return self._create(json.loads(self._body()))
                if self.command == "POST" and path == "/api/validate-yaml":
                    return self._validate_yaml(json.loads(self._body()))
                if self.command == "PUT" and parts[0] == "lfs-upload":
                    return self._lfs_put(parts[1])
                if self.command == "POST" and len(parts) >= 2 and parts[1].endswith(".git"):
                    return self._lfs_batch(parts[0] + "/" + parts[1][:-4], json.loads(self._body()))
                if (
                    self.command == "GET"
                    and len(parts) == 4
                    and parts[0] == "api"
                    and parts[1] in ("models", "datasets")
                ):
                    key = ("datasets/" if parts[1] == "datasets" else "") + "/".join(parts[2:4])
                    if key not in hub.repos:
                        return self._error(404, f"Repository {key} not found")
                    return self._info("/".join(parts[2:4]), hub.repos[key], "revision", "main")
                if parts[0] == "api" and len(parts) >= 6 and parts[1] in ("models", "datasets"):
                    prefix = "datasets/" if parts[1] == "datasets" else ""
                    repo_id, kind, rest = prefix + "/".join(parts[2:4]), parts[4], "/".join(parts[5:])
                    repo = hub.repos.get(repo_id)
                    if repo is None:
                        self._body()
                        return self._error(404, f"Repository {repo_id} not found")
                    if self.command == "POST" and kind == "branch":
                        return self._branch(repo, rest)
                    if self.command == "POST" and kind == "preupload":
                        return self._preupload(json.loads(self._body()))
                    if self.command == "POST" and kind == "commit":
                        return self._commit(repo_id, repo, rest)
                    if self.command == "GET" and kind in ("revision", "tree"):
                        return self._info(repo_id, repo, kind, parts[5])
                if self.command in ("GET", "HEAD") and len(parts) >= 5 and parts[2] == "resolve":
                    return self._resolve("/".join(parts[:2]), parts[3], "/".join(parts[4:]))
                if (
                    self.command in ("GET", "HEAD")
                    and len(parts) >= 6
                    and parts[0] == "datasets"
                    and parts[3] == "resolve"
                ):
                    return self._resolve("/".join(parts[:3]), parts[4], "/".join(parts[5:]))
                self._body()
                self._error(404, f"no route {self.command} {path}", code="NoRoute")

            do_GET = do_HEAD = do_POST = do_PUT = _route

            # ------------------------------------------------------------------------ write side
            def _create(self, req) -> None:
                repo_id = f"{req.get('organization') or 'user'}/{req['name']}"
                if repo_id in hub.repos:  # the Hub answers 409 with the repo's url
                    return self._json(
                        409, {"error": "You already created this model repo", "url": f"{hub.url}/{repo_id}"}
                    )
                repo = hub.repos[repo_id] = Repo(bool(req.get("private")) or req.get("visibility") == "private")
                repo.commit(
                    {".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"}, message="initial commit"
                )
                self._json(200, {"url": f"{hub.url}/{repo_id}", "name": repo_id})

            def _validate_yaml(self, req) -> None:
                """The model card's metadata block must be a YAML mapping (the Hub checks more)."""
                import yaml

                lines = req["content"].splitlines()
                if not lines or lines[0].strip() != "---" or "---" not in [x.strip() for x in lines[1:]]:
                    return self._json(200, {"errors": [], "warnings": [{"message": "empty or missing yaml metadata"}]})
                end = 1 + [x.strip() for x in lines[1:]].index("---")
                try:
                    meta = yaml.safe_load("\n".join(lines[1:end]))
                except yaml.YAMLError as e:
                    return self._json(400, {"errors": [{"message": f"invalid YAML: {e}"}]})
                if not isinstance(meta, dict):
                    return self._json(400, {"errors": [{"message": "metadata must be a YAML mapping"}]})
                hub.card_metadata = meta
                self._json(200, {"errors": [], "warnings": []})

            def _branch(self, repo: Repo, branch: str) -> None:
                req = json.loads(self._body() or b"{}")
                if branch in repo.refs:
                    return self._error(409, f"Reference already exists: {branch}")
                start = repo.resolve(req.get("startingPoint") or "main")
                repo.refs[branch] = start
                self._json(200, {})

            def _preupload(self, req) -> None:
                files = [
                    {
                        "path": f["path"],
                        "shouldIgnore": False,
                        "uploadMode": "lfs" if f["size"] > LFS_THRESHOLD else "regular",
                    }
                    for f in req["files"]
                ]
                self._json(200, {"files": files, "commitOid": None})

            def _lfs_batch(self, repo_id: str, req) -> None:
                if repo_id not in hub.repos:
                    return self._error(404, f"Repository {repo_id} not found")
                objects = []
                for o in req["objects"]:
                    obj = {"oid": o["oid"], "size": o["size"], "authenticated": True}
                    if o["oid"] not in hub.lfs:
                        obj["actions"] = {"upload": {"href": f"{hub.url}/lfs-upload/{o['oid']}", "header": {}}}
                    objects.append(obj)
                self._json(200, {"transfer": "basic", "objects": objects, "hash_algo": "sha256"})

            def _lfs_put(self, oid: str) -> None:
                data = self._body()
                if hashlib.sha256(data).hexdigest() != oid:
                    return self._error(400, "sha256 of the uploaded content does not match its oid")
                hub.lfs[oid] = data
                hub.lfs_uploads += 1
                self._send(200)

            def _commit(self, repo_id: str, repo: Repo, branch: str) -> None:
                files, deleted, message = {}, [], ""
                for line in self._body().splitlines():
                    item = json.loads(line)
                    value = item["value"]
                    if item["key"] == "header":
                        message = value.get("summary", "")
                    elif item["key"] == "file":
                        files[value["path"]] = base64.b64decode(value["content"])
                    elif item["key"] == "lfsFile":
                        if value["oid"] not in hub.lfs:
                            return self._error(422, f"LFS object {value['oid']} was never uploaded")
                        files[value["path"]] = hub.lfs[value["oid"]]
                    elif item["key"] == "deletedFile":
                        deleted.append(value["path"])
                if branch not in repo.refs:
                    return self._error(404, f"Invalid rev id: {branch}", code="RevisionNotFound")
                sha = repo.commit(files, branch, message, tuple(deleted))
                self._json(
                    200, {"commitUrl": f"{hub.url}/{repo_id}/commit/{sha}", "commitOid": sha, "pullRequestUrl": None}
                )

            # ------------------------------------------------------------------------ read side
            def _info(self, repo_id: str, repo: Repo, kind: str, rev: str) -> None:
                sha = repo.resolve(rev)
                if sha is None:
                    return self._error(404, f"Invalid rev id: {rev}", code="RevisionNotFound")
                files = repo.snapshots[sha]
                if kind == "revision":
                    return self._json(
                        200,
                        {
                            "id": repo_id,
                            "sha": sha,
                            "private": repo.private,
                            "siblings": [{"rfilename": f} for f in sorted(files)],
                        },
                    )
                entries = []
                for name, data in sorted(files.items()):
                    e = {"type": "file", "oid": git_oid(data), "size": len(data), "path": name}
                    if len(data) > LFS_THRESHOLD:
                        e["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
                    entries.append(e)
                self._json(200, entries)

            def _resolve(self, repo_id: str, rev: str, name: str) -> None:
                repo = hub.repos.get(repo_id)
                if repo is None:
                    return self._error(404, f"Repository {repo_id} not found")
                sha = repo.resolve(rev)
                if sha is None:
                    return self._error(404, f"Invalid rev id: {rev}", code="RevisionNotFound")
                data = repo.snapshots[sha].get(name)
                if data is None:
                    return self._error(404, f"Entry not found: {name}", code="EntryNotFound")
                lfs = len(data) > LFS_THRESHOLD
                etag = hashlib.sha256(data).hexdigest() if lfs else git_oid(data)
                headers = {"X-Repo-Commit": sha, "ETag": f'"{etag}"', "Content-Type": "application/octet-stream"}
                if lfs:
                    headers |= {"X-Linked-Etag": f'"{etag}"', "X-Linked-Size": str(len(data))}
                self._send(200, data, headers)

        return Handler


TOKEN = "hf_test_secret_token_0123456789"


@contextlib.contextmanager
def serving(tmp_path: Path, monkeypatch):
    """A HubServer that requires ``TOKEN``, with huggingface_hub pointed at it (endpoint, token, a cache of
    the test's own, online, git-LFS uploads: the server does not speak Xet)."""
    import huggingface_hub.constants

    with HubServer() as server:
        server.token = TOKEN
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setenv("HF_TOKEN", TOKEN)
        monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub-cache"))
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_XET", True)
        yield server
