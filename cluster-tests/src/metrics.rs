//! A process's Prometheus `/metrics`, read as a test reads it.

/// The sum of metric `name`'s samples whose labels contain `labels` (`""`:
/// every sample) on the `/metrics` page under `base_url`; 0 when absent.
pub async fn sum(base_url: &str, name: &str, labels: &str) -> f64 {
    let text = reqwest::get(format!("{base_url}/metrics"))
        .await
        .expect("metrics reachable")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with([' ', '{']))
        })
        .filter(|line| line.contains(labels))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
