"""The console's site page /sites/<id> (issue 11 item 3): the site's address, district and coordinates, its
devices with links to their pages, its active alerts (live, from the same event stream as the board) and one
chart per noise monitor, drawn by static/site.js from the device series API (console.series)."""

from __future__ import annotations

import json

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from console.i18n import words


async def site_page(request: Request) -> Response:
    """/sites/<site_id>; 404 (plain text naming the id) for a site that is not in the inventory."""
    # Imported here: console.app imports this module for its route table.
    from console.app import CHART_HOURS, VENDOR_FILES

    app = request.app.state.console
    session = app.session(request)
    if session is None:
        return RedirectResponse("/login", status_code=303)
    w = words(app.lang(request))
    site_id = request.path_params["site_id"]
    site = app.cfg.site(site_id)
    if site is None:
        return Response(w["unknown_site"].format(id=site_id[:80]), status_code=404,
                        media_type="text/plain; charset=utf-8")
    devices = [d for d in app.cfg.devices if d.site == site.id]
    noise = [d.id for d in devices if d.kind == "noise"]
    missing = [n for n in ("echarts.min.js",) if not (app.vendor_dir / "node_modules" / VENDOR_FILES[n]).is_file()]
    boot = {"words": w, "site_id": site.id, "noise_devices": noise, "hours": CHART_HOURS[0],
            "stale_after_s": app.cfg.console.stale_after_s}
    page: Response = app.templates.TemplateResponse(request, "site.html", {
        "w": w, "user": session.user, "csrf": session.csrf, "site": site, "devices": devices, "noise": noise,
        "hours": CHART_HOURS, "missing": missing,
        "boot": json.dumps(boot, ensure_ascii=False).replace("<", "\\u003c"),
    })
    return page
