//! `AsyncSocket` over real loopback sockets: tasks drive the socket through tokio's
//! reactor, and a message wakes only the task it is for.

mod common;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use common::*;
use homa_socket::{AsyncSocket, Error, Socket, SocketConfig, Want};

/// Counts how often the future it wraps is polled.
struct Counted<F> {
    inner: Pin<Box<F>>,
    polls: Arc<AtomicUsize>,
}

impl<F: Future> Future for Counted<F> {
    type Output = F::Output;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.polls.fetch_add(1, Ordering::SeqCst);
        self.inner.as_mut().poll(cx)
    }
}

#[test]
fn an_async_socket_outside_a_runtime_is_a_typed_error() {
    let socket = Socket::new(SocketConfig::default()).unwrap();
    match AsyncSocket::from_socket(socket) {
        Err(Error::Io { .. }) => {}
        other => panic!("expected an I/O error naming the missing runtime, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_tasks_get_their_own_responses() {
    for (kind, v6) in setups() {
        let server = Server::start(|| config(kind, v6), 2, echo);
        let client = Arc::new(AsyncSocket::new(config(kind, v6)).unwrap());
        let tasks: Vec<_> = (0..100u64)
            .map(|k| {
                let client = client.clone();
                let to = server.addr();
                tokio::spawn(async move {
                    let len = [1, 1000, 20_000, 300_000][k as usize % 4];
                    let msg = pattern(len, k);
                    let id = client.send_request(to, &msg, k).await.unwrap();
                    let resp = client
                        .recv_timeout(Want::Response(id), RECV_LIMIT)
                        .await
                        .unwrap();
                    assert_eq!(resp.cookie(), k);
                    assert!(resp.to_vec() == msg, "task {k}: corrupted");
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        server.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_wakes_only_the_task_waiting_for_it() {
    for (kind, v6) in setups() {
        let server = Arc::new(bind_server(|| config(kind, v6)));
        let client = Arc::new(AsyncSocket::new(config(kind, v6)).unwrap());
        let to = server.loopback_addr();
        let mut polls = Vec::new();
        let mut tasks = Vec::new();
        for k in 0..8u64 {
            let id = client.send_request(to, &[k as u8; 100], k).await.unwrap();
            let count = Arc::new(AtomicUsize::new(0));
            polls.push(count.clone());
            let c = client.clone();
            let fut = Counted {
                inner: Box::pin(
                    async move { c.recv_timeout(Want::Response(id), RECV_LIMIT).await },
                ),
                polls: count,
            };
            tasks.push(tokio::spawn(fut));
        }
        // The server answers the first four requests only.
        let srv = server.clone();
        let mut requests = tokio::task::spawn_blocking(move || {
            let mut reqs: Vec<_> = (0..8)
                .map(|_| srv.recv_timeout(Want::Requests, RECV_LIMIT).unwrap())
                .collect();
            reqs.sort_by_key(|r| r.to_vec()[0]);
            reqs
        })
        .await
        .unwrap();
        let later = requests.split_off(4);
        // Every task has been polled (it waits now); polls so far do not count.
        let deadline = std::time::Instant::now() + RECV_LIMIT;
        while polls.iter().any(|p| p.load(Ordering::SeqCst) == 0) {
            assert!(std::time::Instant::now() < deadline, "tasks never polled");
            tokio::task::yield_now().await;
        }
        let before: Vec<usize> = polls.iter().map(|p| p.load(Ordering::SeqCst)).collect();
        for r in &requests {
            r.reply(&r.to_vec()).unwrap();
        }
        let mut rest = tasks.split_off(4);
        for t in tasks {
            let resp = t.await.unwrap().unwrap();
            assert_eq!(resp.len(), 100);
        }
        // The four tasks still waiting were not woken by the others' responses, except
        // those that waited on the reactor (driving the socket for all) or took over that
        // duty: some were not polled at all meanwhile, and at most two more than once.
        // (Waking every task on every event, as before, polled each four times or more.)
        let busy: Vec<usize> = (4..8)
            .map(|k| polls[k].load(Ordering::SeqCst) - before[k])
            .collect();
        let many = busy.iter().filter(|&&n| n > 1).count();
        assert!(
            busy.contains(&0) && many <= 2,
            "{}: polls of the tasks still waiting: {busy:?}",
            label(kind, v6)
        );
        for r in &later {
            r.reply(&r.to_vec()).unwrap();
        }
        for t in rest.drain(..) {
            assert_eq!(t.await.unwrap().unwrap().len(), 100);
        }
        drop(later);
        drop(requests);
    }
}
