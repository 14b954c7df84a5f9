"""A stand-in for the Hugging Face Hub, for tests: an `HfApi` subclass that stores repositories in a local
folder. Installed as transformers' shared `HfApi` object, it makes every real push path of transformers
(model, processor, Trainer) run end to end without a network."""

import fnmatch
import hashlib
import os
import shutil
from concurrent.futures import Future

from huggingface_hub import CommitInfo, HfApi, RepoUrl

ENDPOINT = "https://huggingface.co"


class LocalHubApi(HfApi):
    def __init__(self, root: str):
        super().__init__(endpoint=ENDPOINT, token=False)
        self.root = root
        self.commits: list[tuple[str, str]] = []

    def repo_path(self, repo_id: str) -> str:
        return os.path.join(self.root, repo_id)

    def _commit_info(self, repo_id: str, message: str) -> CommitInfo:
        oid = hashlib.sha1(f"{repo_id}:{len(self.commits)}:{message}".encode()).hexdigest()
        self.commits.append((repo_id, message))
        return CommitInfo(
            commit_url=f"{ENDPOINT}/{repo_id}/commit/{oid}",
            commit_message=message,
            commit_description="",
            oid=oid,
            pr_url=None,
        )

    def whoami(self, token=None, **kwargs):
        return {"name": "test-user", "type": "user"}

    def create_repo(self, repo_id: str, *, token=None, private=None, repo_type=None, exist_ok=False, **kwargs) -> RepoUrl:
        if "/" not in repo_id:
            repo_id = f"test-user/{repo_id}"
        path = self.repo_path(repo_id)
        if os.path.isdir(path) and not exist_ok:
            raise FileExistsError(path)
        os.makedirs(path, exist_ok=True)
        return RepoUrl(f"{ENDPOINT}/{repo_id}", endpoint=ENDPOINT)

    def create_branch(self, repo_id: str, *, branch: str, **kwargs):
        return None

    def upload_folder(self, *, repo_id, folder_path, path_in_repo=None, commit_message=None, allow_patterns=None,
                      ignore_patterns=None, delete_patterns=None, run_as_future=False, **kwargs):
        target = os.path.join(self.repo_path(repo_id), path_in_repo or "")
        allow = [allow_patterns] if isinstance(allow_patterns, str) else allow_patterns
        ignore = [ignore_patterns] if isinstance(ignore_patterns, str) else (ignore_patterns or [])
        for directory, _, files in os.walk(folder_path):
            for name in files:
                source = os.path.join(directory, name)
                relative = os.path.relpath(source, folder_path)
                if allow and not any(fnmatch.fnmatch(relative, p) for p in allow):
                    continue
                if any(fnmatch.fnmatch(relative, p) for p in ignore):
                    continue
                os.makedirs(os.path.dirname(os.path.join(target, relative)), exist_ok=True)
                shutil.copy2(source, os.path.join(target, relative))
        info = self._commit_info(repo_id, commit_message or "Upload folder")
        if run_as_future:
            future = Future()
            future.set_result(info)
            return future
        return info

    def create_commit(self, repo_id, operations, *, commit_message, run_as_future=False, **kwargs):
        target = self.repo_path(repo_id)
        for operation in operations:
            destination = os.path.join(target, operation.path_in_repo)
            os.makedirs(os.path.dirname(destination), exist_ok=True)
            content = operation.path_or_fileobj
            if isinstance(content, (str, os.PathLike)):
                shutil.copy2(content, destination)
            elif isinstance(content, bytes):
                with open(destination, "wb") as f:
                    f.write(content)
            else:
                with open(destination, "wb") as f:
                    f.write(content.read())
        info = self._commit_info(repo_id, commit_message)
        if run_as_future:
            future = Future()
            future.set_result(info)
            return future
        return info


def install_local_hub(monkeypatch, root: str) -> LocalHubApi:
    """Route transformers' Hub calls to a `LocalHubApi` in `root` for the rest of the test."""
    import transformers.utils.hub as transformers_hub

    api = LocalHubApi(root)
    monkeypatch.setattr(transformers_hub, "_hf_api", api)
    return api
