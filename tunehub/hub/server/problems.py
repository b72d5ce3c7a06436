"""Errors that become HTTP answers, with the ``X-Error-Code`` the client maps to its exceptions."""

from __future__ import annotations


class ApiProblem(Exception):
    """An answer other than success: HTTP status, Hub error code and a message for the user."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}  # extra answer headers, e.g. Retry-After


def repo_not_found(repo_id: str) -> ApiProblem:
    return ApiProblem(404, "RepoNotFound", f"Repository {repo_id} not found (or private and not yours).")


def revision_not_found(repo_id: str, revision: str) -> ApiProblem:
    return ApiProblem(404, "RevisionNotFound", f"Invalid rev id: {revision} in {repo_id}.")


def entry_not_found(repo_id: str, revision: str, path: str) -> ApiProblem:
    return ApiProblem(404, "EntryNotFound", f"{path} does not exist in {repo_id} at revision {revision}.")


def bad_request(message: str) -> ApiProblem:
    return ApiProblem(400, "BadRequest", message)


def unauthorized(message: str = "You must be authenticated to do this: send a write token.") -> ApiProblem:
    return ApiProblem(401, "Unauthorized", message)


INVALID_CREDENTIALS = "Invalid credentials in Authorization header"


def invalid_credentials() -> ApiProblem:
    # The exact message the client recognises as "bad token" (not "repo not found").
    return ApiProblem(401, "InvalidCredentials", INVALID_CREDENTIALS)


def forbidden(message: str) -> ApiProblem:
    return ApiProblem(403, "Forbidden", message)
