"""The local Hub answers the real huggingface_hub client the way huggingface.co does for model repos."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

import huggingface_hub
import pytest
from hub_server import USER, HubServer, git_blob_sha
from huggingface_hub import (
    HfApi,
    get_hf_file_metadata,
    hf_hub_download,
    hf_hub_url,
    snapshot_download,
)
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

WEIGHTS = bytes(range(256)) * 8 + b"\x00\xff"  # binary, with NUL bytes
MAIN_FILES = {"config.json": b'{"hidden": 8}', "weights.bin": WEIGHTS, "sub/notes.txt": b"main notes\n"}
DEV_CONFIG = b'{"hidden": 16}'


@dataclass
class PopulatedRepo:
    repo_id: str
    main_sha: str
    dev_sha: str


@pytest.fixture(scope="module")
def repo(hub_server: HubServer, tmp_path_factory: pytest.TempPathFactory) -> PopulatedRepo:
    """A private repo: a folder committed to main, then a branch 'dev' with a different config.json."""
    api = HfApi()
    repo_id = api.create_repo("populated", private=True).repo_id
    folder = tmp_path_factory.mktemp("upload")
    for name, content in MAIN_FILES.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(content)
    main_sha = api.upload_folder(repo_id=repo_id, folder_path=folder, commit_message="weights").oid
    api.create_branch(repo_id, branch="dev")
    dev_sha = api.upload_file(repo_id=repo_id, path_or_fileobj=DEV_CONFIG, path_in_repo="config.json",
                              revision="dev").oid
    return PopulatedRepo(repo_id, main_sha, dev_sha)


def test_client_points_at_local_hub(hub_server: HubServer) -> None:
    assert huggingface_hub.constants.ENDPOINT == hub_server.endpoint == os.environ["HF_ENDPOINT"]
    assert huggingface_hub.constants.HF_HUB_DISABLE_XET and not huggingface_hub.is_offline_mode()
    assert HfApi().whoami()["name"] == USER


def test_create_repo_conflict_and_privacy(repo: PopulatedRepo, hub_server: HubServer) -> None:
    api = HfApi()
    assert api.create_repo(repo.repo_id, exist_ok=True).repo_id == repo.repo_id
    with pytest.raises(HfHubHTTPError) as conflict:
        api.create_repo(repo.repo_id)
    assert conflict.value.response.status_code == 409
    assert api.model_info(repo.repo_id).private is True
    with pytest.raises(RepositoryNotFoundError):  # private repos are invisible without a token
        api.model_info(repo.repo_id, token=False)
    with pytest.raises(HfHubHTTPError) as wrong_token:
        api.model_info(repo.repo_id, token="hf_wrong")
    assert wrong_token.value.response.status_code == 401
    assert api.model_info(api.create_repo("public-one", private=False).repo_id, token=False).private is False


def test_commits_branches_and_info(repo: PopulatedRepo) -> None:
    api = HfApi()
    assert len({repo.main_sha, repo.dev_sha}) == 2 and all(len(s) == 40 for s in (repo.main_sha, repo.dev_sha))
    info = api.model_info(repo.repo_id)
    assert info.sha == repo.main_sha
    assert {s.rfilename for s in info.siblings} == {".gitattributes", *MAIN_FILES}
    assert {s.rfilename: s.blob_id for s in info.siblings}["weights.bin"] == git_blob_sha(WEIGHTS)
    assert api.model_info(repo.repo_id, revision="dev").sha == repo.dev_sha
    assert api.model_info(repo.repo_id, revision=repo.main_sha).sha == repo.main_sha
    refs = {ref.name: ref.target_commit for ref in api.list_repo_refs(repo.repo_id).branches}
    assert refs == {"main": repo.main_sha, "dev": repo.dev_sha}
    assert sorted(api.list_repo_files(repo.repo_id)) == sorted([".gitattributes", *MAIN_FILES])
    top = {entry.path: type(entry).__name__ for entry in api.list_repo_tree(repo.repo_id)}
    assert top == {".gitattributes": "RepoFile", "config.json": "RepoFile", "weights.bin": "RepoFile",
                   "sub": "RepoFolder"}
    assert [entry.path for entry in api.list_repo_tree(repo.repo_id, path_in_repo="sub")] == ["sub/notes.txt"]


def test_download_by_repo_branch_and_sha(repo: PopulatedRepo) -> None:
    def read(filename: str, revision: str | None = None) -> bytes:
        return Path(hf_hub_download(repo.repo_id, filename, revision=revision)).read_bytes()

    assert read("config.json") == MAIN_FILES["config.json"]
    assert read("config.json", "dev") == DEV_CONFIG
    assert read("config.json", repo.main_sha) == MAIN_FILES["config.json"]
    assert read("config.json", repo.dev_sha) == DEV_CONFIG
    assert read("weights.bin") == WEIGHTS
    assert read("sub/notes.txt", "dev") == MAIN_FILES["sub/notes.txt"]  # dev branched off main
    meta = get_hf_file_metadata(hf_hub_url(repo.repo_id, "weights.bin", revision="dev"))
    assert (meta.commit_hash, meta.etag, meta.size) == (repo.dev_sha, git_blob_sha(WEIGHTS), len(WEIGHTS))


def test_snapshot_download(repo: PopulatedRepo) -> None:
    folder = Path(snapshot_download(repo.repo_id, revision="dev"))
    assert folder.name == repo.dev_sha
    files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    assert files == {".gitattributes": files[".gitattributes"], **MAIN_FILES, "config.json": DEV_CONFIG}


def test_old_commits_stay_readable_and_unchanged_files_are_skipped(hub_repo_id: str) -> None:
    api = HfApi()
    api.create_repo(hub_repo_id)
    first = api.upload_file(repo_id=hub_repo_id, path_or_fileobj=b"v1", path_in_repo="a.txt").oid
    assert api.upload_file(repo_id=hub_repo_id, path_or_fileobj=b"v1", path_in_repo="a.txt").oid == first
    second = api.upload_file(repo_id=hub_repo_id, path_or_fileobj=b"v2", path_in_repo="a.txt").oid
    third = api.delete_file("a.txt", repo_id=hub_repo_id).oid
    assert len({first, second, third}) == 3
    assert Path(hf_hub_download(hub_repo_id, "a.txt", revision=first)).read_bytes() == b"v1"
    assert Path(hf_hub_download(hub_repo_id, "a.txt", revision=second)).read_bytes() == b"v2"
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(hub_repo_id, "a.txt")


def test_branch_from_starting_point_with_slash_and_delete(hub_repo_id: str) -> None:
    api = HfApi()
    api.create_repo(hub_repo_id)
    first = api.upload_file(repo_id=hub_repo_id, path_or_fileobj=b"v1", path_in_repo="dir/a.txt").oid
    api.upload_file(repo_id=hub_repo_id, path_or_fileobj=b"v2", path_in_repo="dir/a.txt")
    api.create_branch(hub_repo_id, branch="feat/x", revision=first)
    assert api.model_info(hub_repo_id, revision="feat/x").sha == first
    assert Path(hf_hub_download(hub_repo_id, "dir/a.txt", revision="feat/x")).read_bytes() == b"v1"
    assert Path(hf_hub_download(hub_repo_id, "dir/a.txt")).read_bytes() == b"v2"
    assert [f.path for f in api.list_repo_tree(hub_repo_id, "dir", revision="feat/x")] == ["dir/a.txt"]
    api.delete_branch(hub_repo_id, branch="feat/x")
    with pytest.raises(RevisionNotFoundError):
        api.model_info(hub_repo_id, revision="feat/x")
    with pytest.raises(EntryNotFoundError):
        list(api.list_repo_tree(hub_repo_id, "no-such-dir"))


def test_errors_map_to_client_exceptions(repo: PopulatedRepo, hub_server: HubServer) -> None:
    api = HfApi()
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download(f"{USER}/does-not-exist", "config.json")
    with pytest.raises(RepositoryNotFoundError):
        api.model_info(f"{USER}/does-not-exist")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(repo.repo_id, "config.json", revision="no-such-branch")
    with pytest.raises(RevisionNotFoundError):
        api.model_info(repo.repo_id, revision="0" * 40)
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(repo.repo_id, "missing.txt")
    with pytest.raises(HfHubHTTPError) as exists:
        api.create_branch(repo.repo_id, branch="dev")
    assert exists.value.response.status_code == 409
    api.create_branch(repo.repo_id, branch="dev", exist_ok=True)
    with pytest.raises(RevisionNotFoundError):
        api.upload_file(repo_id=repo.repo_id, path_or_fileobj=b"x", path_in_repo="x", revision="no-such-branch")


def test_server_restart_keeps_repos(repo: PopulatedRepo, hub_server: HubServer) -> None:
    hub_server.stop()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", hub_server.port), timeout=1).close()
    hub_server.start()
    assert HfApi().model_info(repo.repo_id).sha == repo.main_sha


def test_offline_download_from_cache(repo: PopulatedRepo, hub_server: HubServer, request: pytest.FixtureRequest) -> None:
    online = hf_hub_download(repo.repo_id, "weights.bin", revision="dev")
    snapshot = snapshot_download(repo.repo_id)
    request.getfixturevalue("hub_offline")
    assert not hub_server.running and huggingface_hub.is_offline_mode()
    assert hf_hub_download(repo.repo_id, "weights.bin", revision="dev") == online
    assert Path(online).read_bytes() == WEIGHTS
    assert snapshot_download(repo.repo_id) == snapshot
    with pytest.raises(LocalEntryNotFoundError):
        hf_hub_download(repo.repo_id, "never-downloaded.txt")
