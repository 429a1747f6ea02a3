from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.test import Client, TestCase, override_settings

from hpdexample.models import Post
from hpdexample.tests import cache_down


class AnonymousPageTests(TestCase):
    def setUp(self):
        cache.clear()

    def test_shows_the_posts_and_the_release_and_may_be_cached_by_anyone(self):
        response = self.client.get("/")
        self.assertEqual(response.status_code, 200)
        self.assertContains(response, "Hello from the farm")  # from the migration
        self.assertContains(response, f'<span class="release">{settings.HPD_RELEASE}</span>')
        self.assertEqual(response["Cache-Control"], "public, max-age=60")

    @override_settings(ANONYMOUS_MAX_AGE=7)
    def test_max_age_comes_from_the_settings(self):
        self.assertEqual(self.client.get("/")["Cache-Control"], "public, max-age=7")

    def test_sets_no_cookie_and_does_not_vary_on_cookies(self):
        self.client.get("/accounts/login/")  # a visitor who has a csrftoken already
        response = self.client.get("/")
        self.assertEqual(dict(response.cookies), {})
        self.assertNotIn("Cookie", response.get("Vary", ""))

    def test_posts_come_from_the_cache_once_cached(self):
        with self.assertNumQueries(2):  # the posts and the count of jobs
            self.client.get("/")
        Post.objects.create(title="Written after the page was cached", body="-")
        with self.assertNumQueries(1):  # the count of jobs only
            response = self.client.get("/")
        self.assertNotContains(response, "Written after the page was cached")

    def test_still_served_from_the_database_when_the_cache_is_down(self):
        with cache_down(), self.assertLogs("hpdexample.cache", "WARNING"):
            response = self.client.get("/")
        self.assertEqual(response.status_code, 200)
        self.assertContains(response, "Hello from the farm")


class LoggedInTests(TestCase):
    def setUp(self):
        get_user_model().objects.create_user("alice", password="a-long-test-password")

    def test_the_account_page_asks_anonymous_visitors_to_log_in(self):
        response = self.client.get("/account/")
        self.assertRedirects(response, "/accounts/login/?next=/account/",
                             fetch_redirect_response=False)

    def test_logging_in_sets_the_session_cookie_and_shows_a_private_page(self):
        client = Client(enforce_csrf_checks=True)
        form = client.get("/accounts/login/")
        self.assertIn("csrftoken", form.cookies)
        response = client.post("/accounts/login/", {
            "username": "alice", "password": "a-long-test-password",
            "csrfmiddlewaretoken": form.cookies["csrftoken"].value})
        self.assertRedirects(response, "/account/", fetch_redirect_response=False)
        self.assertIn("sessionid", response.cookies)
        page = client.get("/account/")
        self.assertEqual(page.status_code, 200)
        self.assertContains(page, '<span class="username">alice</span>')
        self.assertIn("private", page["Cache-Control"])
        self.assertNotIn("public", page["Cache-Control"])

    def test_a_wrong_password_sets_no_session(self):
        response = self.client.post("/accounts/login/", {"username": "alice",
                                                         "password": "wrong"})
        self.assertEqual(response.status_code, 200)
        self.assertNotIn("sessionid", response.cookies)
