"""GET /: the small web page (plain HTML and JS, no build step) shipped in app/web/."""

from functools import lru_cache
from importlib import resources

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

router = APIRouter(tags=["web"])


@lru_cache(maxsize=1)
def _page() -> str:
    return resources.files("app.web").joinpath("index.html").read_text(encoding="utf-8")


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def index() -> HTMLResponse:
    """Pick, drop or film an image and see the phones found in it."""
    return HTMLResponse(_page())
