"""The gateway's error tree: every answer of an API server becomes the class of its HTTP status."""

from __future__ import annotations

import httpx2
import pytest
from lightkube.core.exceptions import ApiError

from isthmus.errors import UserError
from isthmus.kube import (
    ApiFailure,
    ApplyConflict,
    BadRequest,
    ClientFailure,
    Conflict,
    Forbidden,
    Gone,
    KubeError,
    NotFound,
    ServerError,
    TooManyRequests,
    Unauthorized,
    UnprocessableEntity,
)
from isthmus.kube.connection import translate
from isthmus.kube.errors import api_failure


def _api_error(code: int, message: str, reason: str = "") -> ApiError:
    request = httpx2.Request("PATCH", "https://127.0.0.1/api/v1/namespaces/ns/configmaps/x")
    body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message, "reason": reason,
            "code": code}
    return ApiError(request, httpx2.Response(code, json=body, request=request))


@pytest.mark.parametrize(("status", "cls"), [
    (400, BadRequest), (401, Unauthorized), (403, Forbidden), (404, NotFound), (409, Conflict), (410, Gone),
    (422, UnprocessableEntity), (429, TooManyRequests), (418, ClientFailure), (500, ServerError),
    (503, ServerError), (302, ApiFailure)])
def test_each_status_has_its_class_under_api_failure(status: int, cls: type[ApiFailure]) -> None:
    err = api_failure("c1", "ConfigMap ns/x", status, "Reason", "said no")
    assert type(err) is cls and isinstance(err, ApiFailure) and isinstance(err, KubeError)
    assert (err.cluster, err.what, err.status, err.server_message) == ("c1", "ConfigMap ns/x", status, "said no")
    assert str(err) == f"cluster c1: ConfigMap ns/x: {status} Reason: said no"
    assert isinstance(err, ClientFailure) == (400 <= status < 500)


def test_a_client_library_error_is_translated_with_its_status_and_message() -> None:
    err = translate("c2", _api_error(404, 'configmaps "x" not found', "NotFound"), "get", "ConfigMap ns/x")
    assert isinstance(err, NotFound) and err.reason == "NotFound" and "not found" in str(err)


def test_a_conflict_on_apply_is_the_users_to_resolve_and_names_the_managers() -> None:
    message = 'Apply failed with 1 conflict: conflict with "kubectl-edit" using v1: .data.k'
    err = translate("c1", _api_error(409, message, "Conflict"), "apply", "ConfigMap ns/x")
    assert isinstance(err, ApplyConflict) and isinstance(err, UserError) and err.managers == ["kubectl-edit"]
    assert "--force-conflicts" in str(err)
    assert isinstance(translate("c1", _api_error(409, "the object has been modified"), "update", "x"), Conflict)
