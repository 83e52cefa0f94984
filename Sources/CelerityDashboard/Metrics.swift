import Celerity
import Foundation
import Prometheus

/// `/metrics` in Prometheus' text format, from one overview (O(queues + workers) Redis reads)
/// and the task tallies in the live workers' heartbeats (O(workers × task names)).
///
/// Counters and gauges go through swift-prometheus (a fresh registry per scrape: every value
/// is read from Redis, none is kept here). The runtime histogram is written here: the
/// workers send it already bucketed, and swift-prometheus' histograms only take single
/// observations (`record`), so its `_bucket`, `_sum` and `_count` lines are written as the
/// text format says, after the registry's.
enum Metrics {
    static func render(_ s: Inspector.Snapshot, tallies: [String: [String: TaskTally]]) -> String {
        let r = PrometheusCollectorRegistry()
        let alive = s.workers.filter(\.alive)
        gauge(r, "celerity_workers_up", "Workers with a live heartbeat.").set(Double(alive.count))
        for w in s.workers {
            let l = [("worker", w.node)]
            gauge(r, "celerity_worker_up", "1 while the worker's heartbeat is live, 0 for a known worker without one.", l).set(w.alive ? 1.0 : 0.0)
            gauge(r, "celerity_worker_in_flight", "Messages fetched by the worker and not yet acknowledged (its processing list).", l).set(Double(w.inFlight))
            guard let h = w.heartbeat, w.alive else { continue }
            gauge(r, "celerity_worker_active", "Tasks the worker is running.", l).set(Double(h.active ?? 0))
            gauge(r, "celerity_worker_concurrency", "The worker's concurrency.", l).set(Double(h.concurrency ?? 0))
            for (queue, n) in (h.queuesDone ?? [:]).sorted(by: { $0.key < $1.key }) {
                counter(r, "celerity_queue_tasks_finished_total", "Tasks from the queue finished by the worker (any outcome), since it started.",
                        [("worker", w.node), ("queue", queue)]).increment(by: Int64(n))
            }
            for (plugin, p) in (h.plugins ?? [:]).sorted(by: { $0.key < $1.key }) {
                let pl = [("worker", w.node), ("plugin", plugin)]
                gauge(r, "celerity_plugin_processes", "Processes of a persistent plugin running.", pl).set(Double(p.processes))
                gauge(r, "celerity_plugin_available", "1 while the plugin takes calls, 0 while it is paused after a crash loop.", pl).set(p.available ? 1.0 : 0.0)
                counter(r, "celerity_plugin_restarts_total", "Plugin processes started again after they ended unasked (crashes).", pl).increment(by: Int64(p.restarts))
                counter(r, "celerity_plugin_recycles_total", "Plugin processes replaced after max_calls or max_rss_mb.", pl).increment(by: Int64(p.recycles))
            }
            if let rss = h.rss {
                gauge(r, "celerity_worker_resident_memory_bytes", "Resident memory of the worker process.", l).set(Double(rss))
            }
        }
        for q in s.queues {
            gauge(r, "celerity_queue_messages", "Messages waiting in the queue, all priorities.", [("queue", q.name)]).set(Double(q.depth))
            for list in q.lists {
                gauge(r, "celerity_queue_messages_by_priority", "Messages waiting in one priority list of the queue (0: 0-2, 3: 3-5, 6: 6-8, 9).",
                      [("queue", q.name), ("priority", String(list.priority))]).set(Double(list.depth))
            }
            gauge(r, "celerity_queue_oldest_message_age_seconds", "How long the next message of the queue has been waiting, as first seen by a dashboard (0 when empty).",
                  [("queue", q.name)]).set(q.oldestAge ?? 0)
            gauge(r, "celerity_queue_consumers", "Live Celerity workers consuming the queue.", [("queue", q.name)]).set(Double(q.consumers.count))
            gauge(r, "celerity_queue_paused", "1 while the queue is paused for every Celerity worker.", [("queue", q.name)]).set(q.paused ? 1.0 : 0.0)
        }
        gauge(r, "celerity_dead_letters", "Messages in the dead-letter list.").set(Double(s.deadLetters.count))
        gauge(r, "celerity_delayed_messages", "Messages waiting for their eta or countdown.").set(Double(s.delayed.count))
        gauge(r, "celerity_delayed_overdue_messages", "Delayed messages past their due time, not yet forwarded.").set(Double(s.delayed.overdue))
        gauge(r, "celerity_revoked_tasks", "Revocations in force.").set(Double(s.revoked.live))

        for worker in tallies.keys.sorted() {
            for (task, t) in tallies[worker]!.sorted(by: { $0.key < $1.key }) {
                for (outcome, n) in [("succeeded", t.succeeded), ("failed", t.failed), ("retried", t.retried), ("revoked", t.revoked)] {
                    counter(r, "celerity_tasks_total", "Tasks finished since the worker started, by outcome.", [("worker", worker), ("task", task), ("outcome", outcome)]).increment(by: Int64(n))
                }
            }
        }
        var out: [UInt8] = []
        r.emit(into: &out)
        var text = String(decoding: out, as: UTF8.self)
        text += runtimeHistogram(tallies)
        return text
    }

    /// A gauge named in full (`celerity_…`): swift-prometheus' descriptor joins namespace,
    /// name and unit; the name is given whole here, as the text format shows it.
    static func gauge(_ r: PrometheusCollectorRegistry, _ name: String, _ help: String, _ labels: [(String, String)] = []) -> Gauge {
        r.makeGauge(descriptor: MetricNameDescriptor(metricName: name, unitName: "", helpText: help), labels: labels)
    }

    static func counter(_ r: PrometheusCollectorRegistry, _ name: String, _ help: String, _ labels: [(String, String)] = []) -> Counter {
        r.makeCounter(descriptor: MetricNameDescriptor(metricName: name, unitName: "", helpText: help), labels: labels)
    }

    /// `celerity_task_runtime_seconds` from the workers' bucketed tallies.
    static func runtimeHistogram(_ tallies: [String: [String: TaskTally]]) -> String {
        guard tallies.values.contains(where: { !$0.isEmpty }) else { return "" }
        var t = "# HELP celerity_task_runtime_seconds How long tasks ran, since the worker started.\n# TYPE celerity_task_runtime_seconds histogram\n"
        for worker in tallies.keys.sorted() {
            for (task, tally) in tallies[worker]!.sorted(by: { $0.key < $1.key }) {
                let l = "worker=\"\(escape(worker))\",task=\"\(escape(task))\""
                for (i, bound) in TaskTally.bounds.enumerated() {
                    t += "celerity_task_runtime_seconds_bucket{\(l),le=\"\(bound)\"} \(tally.buckets[i])\n"
                }
                t += "celerity_task_runtime_seconds_bucket{\(l),le=\"+Inf\"} \(tally.timed)\n"
                t += "celerity_task_runtime_seconds_sum{\(l)} \(tally.runtimeSum)\n"
                t += "celerity_task_runtime_seconds_count{\(l)} \(tally.timed)\n"
            }
        }
        return t
    }

    /// A label value as the text format wants it.
    static func escape(_ s: String) -> String {
        s.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"").replacingOccurrences(of: "\n", with: "\\n")
    }
}
