//! A router that remembers what it serves. axum's `Router` cannot list its routes, so
//! every endpoint family builds its router through [`Routes`], which adds each handler
//! to the router and writes down its method and path: the same call does both, so the
//! list cannot drift from the router. The test in [`super`] compares that list with the
//! paths of the OpenAPI description ([`super::openapi`]), both ways.

use axum::Router;
use axum::handler::Handler;
use axum::http::Method;
use axum::routing::{MethodRouter, delete, get, patch, post};

use crate::state::AppState;

/// A router under construction, with the (method, path) of every route added to it.
/// Paths use axum's `{name}` captures, which is also OpenAPI's path template syntax.
#[derive(Default)]
pub struct Routes {
    router: Router<AppState>,
    served: Vec<(Method, &'static str)>,
}

impl Routes {
    /// No routes.
    pub fn new() -> Self {
        Self::default()
    }

    /// Serves `GET path` (and `HEAD`, which axum answers with the headers of `GET`,
    /// RFC 9110 §9.3.2) with `handler`.
    pub fn get<H, T>(self, path: &'static str, handler: H) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        self.add(Method::GET, path, get(handler))
    }

    /// Serves `POST path` with `handler`.
    pub fn post<H, T>(self, path: &'static str, handler: H) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        self.add(Method::POST, path, post(handler))
    }

    /// Serves `PATCH path` with `handler`.
    pub fn patch<H, T>(self, path: &'static str, handler: H) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        self.add(Method::PATCH, path, patch(handler))
    }

    /// Serves `DELETE path` with `handler`.
    pub fn delete<H, T>(self, path: &'static str, handler: H) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        self.add(Method::DELETE, path, delete(handler))
    }

    /// Adds one method of one path. axum merges the methods of a path given twice (and
    /// panics when the same method is given twice, a programming error a test meets).
    fn add(mut self, method: Method, path: &'static str, route: MethodRouter<AppState>) -> Self {
        self.router = self.router.route(path, route);
        self.served.push((method, path));
        self
    }

    /// These routes and `other`'s.
    pub fn merge(mut self, other: Routes) -> Self {
        self.router = self.router.merge(other.router);
        self.served.extend(other.served);
        self
    }

    /// Every (method, path) served, in the order added.
    pub fn served(&self) -> &[(Method, &'static str)] {
        &self.served
    }

    /// The router.
    pub fn into_router(self) -> Router<AppState> {
        self.router
    }
}
