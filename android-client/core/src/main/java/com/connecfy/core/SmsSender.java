package com.connecfy.core;

/**
 * The phone's SMS stack (SmsManager on Android). {@link #send} only hands the message over;
 * whether each part was sent and delivered arrives later through {@link SendResults}.
 */
public interface SmsSender {
    /**
     * Why the phone cannot send SMS right now (the permission was withdrawn, say), or null
     * when it can. While it cannot, the engine claims nothing.
     */
    String whyCannotSend();

    /** How many SMS parts the text takes (SmsManager.divideMessage). */
    int countParts(String message);

    /**
     * The SIM the message goes out from: {@link SimChoice#forTask} with what the phone says
     * about its SIMs now. {@link SimChoice.Outcome#SLOT_UNAVAILABLE}: the message is failed
     * with the decision's error, not sent.
     */
    SimChoice.Decision simFor(Task task);

    /** Hands the message over, from the SIM {@link #simFor} chose; an exception means it was not sent at all. */
    void send(Task task, int parts, SimChoice.Decision sim) throws Exception;
}
