// The HTTP API (docs/protocol.md, "HTTP API"): the conversation list,
// creating conversations, history pages, muting, devices for push. Every call carries the token as
// `Authorization: Bearer`; errors come back as ApiError with the server's
// stable code.

export class ApiError extends Error {
  /**
   * @param {number} status  HTTP status, 0 when the request never got an answer
   * @param {string} code    `unauthorized`, `not_found`, `unavailable`, `network`...
   * @param {string} message
   */
  constructor(status, code, message) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
  }
}

export class Api {
  /**
   * @param {{baseUrl?: string, token: string, fetch?: typeof fetch}} options
   */
  constructor({ baseUrl = '', token, fetch: fetchImpl = globalThis.fetch.bind(globalThis) }) {
    this.baseUrl = baseUrl;
    this.token = token;
    this.fetch = fetchImpl;
  }

  async request(method, path, body) {
    const headers = { authorization: `Bearer ${this.token}` };
    if (body !== undefined) headers['content-type'] = 'application/json';
    let response;
    try {
      response = await this.fetch(this.baseUrl + path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: 'no-store',
      });
    } catch (err) {
      throw new ApiError(0, 'network', `cannot reach the server (${err.message})`);
    }
    let json = null;
    try {
      json = await response.json();
    } catch {
      json = null;
    }
    if (!response.ok) {
      throw new ApiError(
        response.status,
        json?.code ?? 'http_' + response.status,
        json?.message ?? response.statusText,
      );
    }
    return json;
  }

  /** `GET /conversations`: most recently active first. */
  async conversations(limit = 100) {
    const answer = await this.request('GET', `/conversations?limit=${limit}`);
    return answer?.conversations ?? [];
  }

  /** `POST /conversations` for a direct conversation (idempotent). */
  createDirect(peer_id, listing_id) {
    const body = { kind: 'direct', peer_id };
    if (listing_id) body.listing_id = listing_id;
    return this.request('POST', '/conversations', body);
  }

  /** `POST /conversations` for a new group. */
  createGroup(participants, title) {
    const body = { kind: 'group', participants };
    if (title) body.title = title;
    return this.request('POST', '/conversations', body);
  }

  /** `POST /media`: stores a file for a conversation; resolves to
   * `{media_key, url, content_type, size}`. The server checks the bytes:
   * 413 past its size limit, 415 for a type it does not take. */
  async uploadMedia(conversation_id, file) {
    let response;
    try {
      response = await this.fetch(
        `${this.baseUrl}/media?conversation_id=${encodeURIComponent(conversation_id)}`,
        {
          method: 'POST',
          headers: {
            authorization: `Bearer ${this.token}`,
            'content-type': file.type || 'application/octet-stream',
          },
          body: file,
        },
      );
    } catch (err) {
      throw new ApiError(0, 'network', `cannot reach the server (${err.message})`);
    }
    const json = await response.json().catch(() => null);
    if (!response.ok) {
      throw new ApiError(response.status, json?.code ?? 'http_' + response.status, json?.message ?? response.statusText);
    }
    return json;
  }

  /** `GET /media/...` with the token in a header (never in a URL): a Blob. */
  async mediaBlob(url) {
    const response = await this.fetch(this.baseUrl + url, {
      headers: { authorization: `Bearer ${this.token}` },
    });
    if (!response.ok) throw new ApiError(response.status, 'http_' + response.status, response.statusText);
    return response.blob();
  }

  /** `POST /blocks`: the user reaches you through no channel in direct
   * conversations. `DELETE /blocks/{user}` lifts it; `GET /blocks` lists. */
  block(user_id) {
    return this.request('POST', '/blocks', { user_id });
  }

  unblock(user_id) {
    return this.request('DELETE', `/blocks/${encodeURIComponent(user_id)}`);
  }

  async blocks() {
    const answer = await this.request('GET', '/blocks');
    return (answer?.blocks ?? []).map((b) => b.user_id);
  }

  /** `POST /reports` about a message (`conversation_id`, `seq`) or a user. */
  report(body) {
    return this.request('POST', '/reports', body);
  }

  /** `DELETE /conversations/{id}/messages/{seq}`: unsends your message. */
  unsend(conversation_id, seq) {
    return this.request('DELETE', `/conversations/${encodeURIComponent(conversation_id)}/messages/${seq}`);
  }

  /** `PUT` / `DELETE /conversations/{id}/mute`: no pushes from it for
   * this user (on every device); resolves to `{conversation_id, muted}`. */
  setMuted(conversation_id, muted) {
    return this.request(muted ? 'PUT' : 'DELETE', `/conversations/${encodeURIComponent(conversation_id)}/mute`);
  }

  /** `PUT /devices`: this browser's FCM token gets the user's pushes. */
  registerDevice(token, platform = 'web') {
    return this.request('PUT', '/devices', { token, platform });
  }

  /** `DELETE /devices/{token}`: no more pushes to it (idempotent). */
  deleteDevice(token) {
    return this.request('DELETE', `/devices/${encodeURIComponent(token)}`);
  }

  /** `GET /history`: a page, newest first, and the next page's `before_seq`. */
  history(conversation_id, { before_seq, limit = 50 } = {}) {
    const query = new URLSearchParams({ conversation_id, limit: String(limit) });
    if (before_seq !== undefined && before_seq !== null) query.set('before_seq', String(before_seq));
    return this.request('GET', `/history?${query}`);
  }
}
