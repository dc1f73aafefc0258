"""Keep-alive clients that send a prepared payload and return a status string.

HTTP: aiohttp with one pooled session (status is the HTTP code). gRPC: grpc.aio with the
request already serialized (identity serializers: no protobuf work on the hot path);
status is the gRPC code name. Transport failures become ``error:<kind>``.
"""

from __future__ import annotations

from typing import Any, Protocol

from inferpack.loadtest.payloads import Payload

TIMEOUT_S = 60.0


class Transport(Protocol):
    async def send(self, payload: Payload) -> str: ...

    async def close(self) -> None: ...


class HttpTransport:
    def __init__(self, url: str) -> None:
        import aiohttp

        self._url = url.rstrip("/")
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, force_close=False),
            timeout=aiohttp.ClientTimeout(total=TIMEOUT_S),
        )

    async def send(self, payload: Payload) -> str:
        try:
            async with self._session.post(
                f"{self._url}/v2/models/{payload.model}/infer",
                data=payload.body,
                headers=dict(payload.headers),
            ) as response:
                await response.read()
                return str(response.status)
        except Exception as error:  # a failed request is a result, not a crash
            return f"error:{type(error).__name__}"

    async def close(self) -> None:
        await self._session.close()


class GrpcTransport:
    def __init__(self, url: str) -> None:
        import grpc

        self._grpc = grpc
        self._channel = grpc.aio.insecure_channel(
            url.removeprefix("grpc://"),
            options=[("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)],
        )
        self._infer: Any = self._channel.unary_unary(
            "/inference.GRPCInferenceService/ModelInfer",
            request_serializer=None,
            response_deserializer=None,
        )

    async def send(self, payload: Payload) -> str:
        try:
            await self._infer(payload.body, timeout=TIMEOUT_S)
        except self._grpc.aio.AioRpcError as error:
            return str(error.code().name)
        except Exception as error:
            return f"error:{type(error).__name__}"
        return "OK"

    async def close(self) -> None:
        await self._channel.close()


def open_transport(url: str, transport: str) -> Transport:
    return GrpcTransport(url) if transport == "grpc" else HttpTransport(url)
