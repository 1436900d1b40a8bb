package com.connecfy.core;

/**
 * The server answered with an error status. {@code code} and {@code detail} come from the
 * JSON error body {@code {"status_code", "code", "detail"}} when there is one; an answer
 * that is not that JSON (a proxy's, a CDN's or a captive portal's page) keeps
 * {@code http_<status>} and is never taken for the server's word on the token.
 */
public final class ApiException extends Exception {
    private static final long serialVersionUID = 1L;

    private final int status;
    private final String code;
    private final String detail;
    private final long retryAfterMillis;
    private final boolean serverJson;

    /** An error that did not come as the server's JSON error body. */
    public ApiException(int status, String code, String detail, long retryAfterMillis) {
        this(status, code, detail, retryAfterMillis, false);
    }

    /**
     * {@code serverJson}: the answer was the server's own JSON error (Content-Type
     * application/json, an object whose {@code status_code} is the HTTP status).
     */
    public ApiException(int status, String code, String detail, long retryAfterMillis, boolean serverJson) {
        super("HTTP " + status + " " + code + ": " + detail);
        this.status = status;
        this.code = code;
        this.detail = detail;
        this.retryAfterMillis = retryAfterMillis;
        this.serverJson = serverJson;
    }

    public int status() {
        return status;
    }

    public String code() {
        return code;
    }

    public String detail() {
        return detail;
    }

    /** The wait the server asked for ({@code Retry-After}), or -1 when it named none. */
    public long retryAfterMillis() {
        return retryAfterMillis;
    }

    public Disposition disposition() {
        return Disposition.of(status);
    }

    /** Whether the answer was the server's own JSON error body. */
    public boolean isServerJson() {
        return serverJson;
    }

    /**
     * The server itself says it does not know the device token: its JSON 401 with code
     * {@code not_authenticated} (the phone was removed from its account). One such answer
     * is not enough to unpair: {@link DeviceEngine} waits for a second one in a row. Any
     * other 401 or 403, and any answer that is not the server's JSON, is retried.
     */
    public boolean refusesToken() {
        return status == 401 && serverJson && NOT_AUTHENTICATED.equals(code);
    }

    /** The server's code for a credential it does not know. */
    public static final String NOT_AUTHENTICATED = "not_authenticated";
}
