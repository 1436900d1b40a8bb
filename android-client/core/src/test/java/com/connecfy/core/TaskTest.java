package com.connecfy.core;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertNull;

import java.util.List;

import org.json.JSONArray;
import org.json.JSONException;
import org.junit.Test;

/** A claimed task as the server sends it, with the SIM slot the sender asked for when there is one. */
public class TaskTest {
    @Test
    public void aTaskCarriesItsSimSlotAndOneWithoutItHasNone() throws JSONException {
        List<Task> tasks = Task.listFromJson(new JSONArray("[{\"id\": \"A\", \"to\": \"+15551234567\", "
            + "\"message\": \"hi\", \"sim_slot\": 2}, {\"id\": \"B\", \"to\": \"+15551234567\", "
            + "\"message\": \"hi\"}, {\"id\": \"C\", \"to\": \"+15551234567\", \"message\": \"hi\", "
            + "\"sim_slot\": null}]"));
        assertEquals(Integer.valueOf(2), tasks.get(0).simSlot);
        assertNull(tasks.get(1).simSlot);
        assertNull(tasks.get(2).simSlot);
    }

    @Test
    public void aSimSlotThatIsNotAWholeNumberNamesNoSlotAPhoneHas() throws JSONException {
        List<Task> tasks = Task.listFromJson(new JSONArray("[{\"id\": \"A\", \"to\": \"+1555\", \"message\": "
            + "\"hi\", \"sim_slot\": \"two\"}, {\"id\": \"B\", \"to\": \"+1555\", \"message\": \"hi\", "
            + "\"sim_slot\": 1.5}, {\"id\": \"C\", \"to\": \"+1555\", \"message\": \"hi\", \"sim_slot\": -1}]"));
        for (Task task : tasks) {
            assertEquals(task.id, Integer.valueOf(0), task.simSlot);
        }
    }
}
