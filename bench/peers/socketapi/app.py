"""The channels and actions of examples/socketapi_docs.rs that switchboard-bench uses, on the real
SocketAPI 0.2.0 (the same definitions as SocketAPI's documentation).

    python -m uvicorn app:app --host 127.0.0.1 --port PORT --log-level warning   (from this folder)
"""

from typing import Annotated

from socketapi import RequiredOnSubscribe, SocketAPI

app = SocketAPI()


@app.channel("chat")
async def chat(message: str = "Welcome"):
    return {"message": message}


@app.channel("notifications")
async def notifications(user_id: Annotated[int, RequiredOnSubscribe], notification_type: str = "all"):
    return {"user_id": user_id, "type": notification_type, "notifications": []}


@app.action("send_message")
async def send_message(text: str):
    await chat(message=text)


@app.action("send_notification")
async def send_notification(user_id: int, message: str):
    await notifications(user_id=user_id, notification_type="alert")


@app.action("add")
async def add(a: int, b: int):
    return a + b
