"""`/api/incidents`: a provider's overlapping availability alerts as one outage each."""

from __future__ import annotations

from aiohttp import web

from cryptomon.http.errors import NotFound
from cryptomon.http.keys import ARGUMENTS
from cryptomon.http.schemas import IncidentList
from cryptomon.http.views import models_of, respond
from cryptomon.projections.views import IncidentView


async def incidents(request: web.Request) -> web.Response:
    args = request[ARGUMENTS]
    since, until = args.moment("from"), args.moment("to")
    if since is not None and until is not None and since > until:
        return respond(IncidentList(count=0, incidents=[]))  # no time is in that window
    found = models_of(request).projections.incidents.query(
        provider=args.text("provider"),
        open_only=args.boolean("open"),
        since=since,
        until=until,
        limit=args.integer("limit"),
    )
    return respond(IncidentList(count=len(found), incidents=[IncidentView.of(i) for i in found]))


async def incident(request: web.Request) -> web.Response:
    incident_id = request[ARGUMENTS].integer("incident_id")
    found = models_of(request).projections.incidents.get(incident_id)
    if found is None:
        raise NotFound("incident", f"there is no incident with id {incident_id}")
    return respond(IncidentView.of(found))
