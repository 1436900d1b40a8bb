package com.connecfy.core;

import java.io.IOException;
import java.util.List;

/**
 * The calls a paired phone makes with its device token. IOException: no answer
 * (network down, server stopped, timeout); ApiException: an error status.
 */
public interface DeviceApi {
    /** {@code POST /api/devices/<id>/heartbeat/}; returns the server's {@code last_seen}. */
    String heartbeat(Heartbeat heartbeat) throws IOException, ApiException;

    /** {@code GET /api/devices/<id>/tasks/?limit=N}: atomically claims up to {@code limit} messages. */
    default List<Task> claimTasks(int limit) throws IOException, ApiException {
        return claimTasks(limit, 0);
    }

    /**
     * {@code GET /api/devices/<id>/tasks/?limit=N&wait=S}: with nothing to claim, a server
     * that long-polls holds the request until messages come (and answers them) or for
     * {@code waitSeconds} (then answers none); an older server answers at once. 0: a plain
     * claim, without {@code wait}.
     */
    List<Task> claimTasks(int limit, int waitSeconds) throws IOException, ApiException;

    /** {@code POST /api/sms/<id>/status/} with {@code sent}, {@code delivered} or {@code failed} (+ error). */
    default void reportStatus(String messageId, String status, String error) throws IOException, ApiException {
        reportStatus(messageId, status, error, false, null);
    }

    /**
     * {@code POST /api/sms/<id>/status/}, saying more when there is more to say:
     * {@code "retryable": true} with {@code failed} (the server puts the message back), and
     * {@code sim_slot} (1-based; null: left out) with {@code sent}, the SIM that sent it.
     */
    void reportStatus(String messageId, String status, String error, boolean retryable, Integer simSlot)
            throws IOException, ApiException;

    /**
     * As {@link #reportStatus(String, String, String, boolean, Integer)}, with {@code sent}
     * of an end-to-end encrypted message also {@code segments}, the parts it took (null:
     * left out); the server keeps it in place of the upper bound it charged.
     */
    default void reportStatus(String messageId, String status, String error, boolean retryable, Integer simSlot,
            Integer segments) throws IOException, ApiException {
        reportStatus(messageId, status, error, retryable, simSlot);
    }

    /**
     * {@code POST /api/devices/<id>/inbound/}: an SMS this phone received. Returns the
     * server's id for it; the same {@code ref} again returns the same id and stores nothing
     * twice, so a retry is always safe.
     */
    String reportInbound(InboundSms sms) throws IOException, ApiException;

    /**
     * Ends a claim that waits on the server ({@code waitSeconds} > 0), running on another
     * thread, at once: it throws an IOException. Safe from any thread; does nothing when no
     * claim waits, and later calls are not affected.
     */
    default void interruptWait() {
    }
}
