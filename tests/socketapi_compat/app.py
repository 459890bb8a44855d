"""The channels and actions of examples/socketapi_docs.rs, on the real SocketAPI.

Each function is named exactly like its channel or action, because SocketAPI's error texts use the
function's name ("Invalid parameters for action 'NAME'").

    python -m uvicorn app:app --host 127.0.0.1 --port PORT    (run from this folder)
"""

from typing import Annotated

from socketapi import RequiredOnSubscribe, SocketAPI

app = SocketAPI()


@app.channel("chat")
async def chat(message: str = "Welcome"):
    return {"message": message}


@app.channel("news", default_response=True)
async def news():
    return {"headline": "Breaking News!"}


@app.channel("private_chat")
async def private_chat(token: Annotated[str, RequiredOnSubscribe], message: str = "Welcome"):
    if token != "secret_token":
        raise ValueError("Invalid token")
    return {"message": message, "authenticated": True}


@app.channel("notifications")
async def notifications(user_id: Annotated[int, RequiredOnSubscribe], notification_type: str = "all"):
    return {"user_id": user_id, "type": notification_type, "notifications": []}


@app.channel("user_updates")
async def user_updates(user_id: int, include_details: bool = True):
    return {"user_id": user_id, "details": include_details}


@app.action("send_message")
async def send_message(text: str):
    await chat(message=text)


@app.action("send_notification")
async def send_notification(user_id: int, message: str):
    await notifications(user_id=user_id, notification_type="alert")


@app.action("add")
async def add(a: int, b: int):
    return a + b
