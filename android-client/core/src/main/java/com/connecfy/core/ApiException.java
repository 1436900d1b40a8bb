package com.connecfy.core;

/**
 * The server answered with an error status. {@code code} and {@code detail} come from the
 * JSON error body {@code {"status_code", "code", "detail"}} when there is one.
 */
public final class ApiException extends Exception {
    private static final long serialVersionUID = 1L;

    private final int status;
    private final String code;
    private final String detail;
    private final long retryAfterMillis;

    public ApiException(int status, String code, String detail, long retryAfterMillis) {
        super("HTTP " + status + " " + code + ": " + detail);
        this.status = status;
        this.code = code;
        this.detail = detail;
        this.retryAfterMillis = retryAfterMillis;
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

    /** 401 or 403: the device token no longer works, the phone was removed from its account. */
    public boolean meansUnpaired() {
        return status == 401 || status == 403;
    }
}
