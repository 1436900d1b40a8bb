package com.connecfy.core;

import java.util.ArrayList;
import java.util.List;

/**
 * Stands in for SmsManager: records what was handed over, and from which SIM; parts =
 * ceil(length / 10). Its SIMs are what the phone would say (slots, active subscriptions
 * and their slots, the default SMS SIM, whether they can be listed); which one a message
 * goes out from is the core's {@link SimChoice}. By default one slot with SIM 11 in it.
 */
class RecordingSender implements SmsSender {
    private final Clock clock;
    final List<String> sent = new ArrayList<String>();
    /** The text each message in {@link #sent} went out with. */
    final List<String> texts = new ArrayList<String>();
    final List<Long> sentAt = new ArrayList<Long>();
    /** The subscription each message in {@link #sent} went out from. */
    final List<Integer> sentFrom = new ArrayList<Integer>();
    RuntimeException failWith;
    String cannotSend;
    int slots = 1;
    int[] activeSubscriptions = {11};
    /** The slot (0-based) of each of {@link #activeSubscriptions}. */
    int[] activeSlots = {0};
    /** False: no READ_PHONE_STATE, so the active SIMs cannot be listed. */
    boolean canListSims = true;
    int defaultSms = 11;
    int chosen = SimChoice.DEFAULT;

    RecordingSender(Clock clock) {
        this.clock = clock;
    }

    /** A dual-SIM phone: subscription 11 in slot 1, 22 in slot 2, 11 the default SMS SIM. */
    RecordingSender dualSim() {
        slots = 2;
        activeSubscriptions = new int[] {11, 22};
        activeSlots = new int[] {0, 1};
        return this;
    }

    @Override
    public String whyCannotSend() {
        return cannotSend;
    }

    @Override
    public int countParts(String message) {
        return Math.max(1, (message.length() + 9) / 10);
    }

    @Override
    public synchronized SimChoice.Decision simFor(Task task) {
        final int[] ids = activeSubscriptions.clone();
        final int[] where = activeSlots.clone();
        SimSlot.Lookup slotOf = new SimSlot.Lookup() {
            @Override
            public Integer slotOf(int subscriptionId) {
                for (int i = 0; i < ids.length; i++) {
                    if (ids[i] == subscriptionId) {
                        return where[i];
                    }
                }
                return null;
            }
        };
        return SimChoice.forTask(task.simSlot, slots, canListSims ? ids : null, defaultSms, chosen, slotOf);
    }

    @Override
    public synchronized void send(Task task, int parts, SimChoice.Decision sim) {
        if (failWith != null) {
            throw failWith;
        }
        sent.add(task.id);
        texts.add(task.message);
        sentAt.add(clock.now());
        sentFrom.add(sim.subscriptionId);
    }
}
