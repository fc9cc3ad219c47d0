"""An embedding server as the README describes one: its own Starlette app owns the lifespan, mounts the
node's REST API under /enx and carries signaling on its own WebSocket route through
engine.signaling.serve(). Run by test_embedding.py with uvicorn; HOST_DATA_DIR names the data directory."""
import contextlib
import os
import time

from starlette.applications import Starlette
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.responses import PlainTextResponse
from starlette.websockets import WebSocket

from enx_media import Engine, Settings
from enx_media.web import create_app

engine = Engine(Settings(data_dir=os.environ["HOST_DATA_DIR"], media_port=0,
                         media_thread=os.environ.get("HOST_MEDIA_THREAD", "on")))


async def rtc(websocket: WebSocket):
    await websocket.accept()

    async def close(code: int, reason: str) -> None:
        await websocket.close(code, reason)

    async def receive():
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return None
        return message["text"] if message.get("text") is not None else (message.get("bytes") or b"")

    await engine.signaling.serve(websocket.send_json, close, receive)


async def hello(request):
    return PlainTextResponse("host app")


async def busy(request):
    """A host route that blocks its event loop (a synchronous call in an async handler)."""
    time.sleep(float(request.query_params.get("s", "1")))
    return PlainTextResponse("done")


@contextlib.asynccontextmanager
async def lifespan(app):
    await engine.start_media()       # a mounted app's lifespan does not run: the host starts media
    yield
    await engine.stop_media()
    engine.close()


app = Starlette(routes=[Route("/", hello), Route("/busy", busy), WebSocketRoute("/rtc", rtc), Mount("/enx", app=create_app(engine=engine))],
                lifespan=lifespan)
