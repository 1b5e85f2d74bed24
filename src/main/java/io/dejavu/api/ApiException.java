package io.dejavu.api;

import io.vertx.core.json.JsonObject;

/**
 * A request the API answers with an error: its HTTP status and the OpenAI-style error body
 * {"error": {"message", "type", "param", "code"}}.
 */
public final class ApiException extends RuntimeException {
    private final int status;
    private final String type;
    private final String param;
    private final String code;

    public ApiException(int status, String type, String param, String code, String message) {
        super(message, null, false, false);
        this.status = status;
        this.type = type;
        this.param = param;
        this.code = code;
    }

    /** 400 about one parameter. */
    public static ApiException invalid(String param, String message) {
        return new ApiException(400, "invalid_request_error", param, "invalid_value", message);
    }

    public int status() {
        return status;
    }

    /** The error kind metrics count it under: its code (queue_full, invalid_value, ...), else its type. */
    public String kind() {
        return code != null ? code : type;
    }

    public JsonObject body() {
        return new JsonObject().put("error", new JsonObject()
                .put("message", getMessage())
                .put("type", type)
                .put("param", param)
                .put("code", code));
    }
}
