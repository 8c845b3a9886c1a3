<?php
/**
 * Privacy tools: the suggested policy text, and the personal-data exporter and eraser for the
 * trace data the plugin stores with comments (and, for the eraser, the service's own events).
 *
 * @package Activelead
 */

if ( ! defined( 'ABSPATH' ) ) {
	exit;
}

/**
 * Hooks of Tools → Export / Erase Personal Data.
 */
class Activelead_Privacy {

	const PAGE_SIZE = 100;

	/**
	 * Suggested text for the site's privacy policy.
	 *
	 * @return void
	 */
	public static function add_policy_content() {
		if ( ! function_exists( 'wp_add_privacy_policy_content' ) ) {
			return;
		}
		$text = '<p class="privacy-policy-tutorial">' . esc_html__( 'Activelead checks submissions for spam and fraud.', 'activelead' ) . '</p>'
			. '<p><strong class="privacy-policy-tutorial">' . esc_html__( 'Suggested text:', 'activelead' ) . '</strong> '
			. esc_html__( 'When you leave a comment, register or send a form on this site, your IP address, browser user agent, e-mail address, name and message are sent to our spam-protection service (Activelead) to check whether the submission is spam. The result (a score, labels and a reference number) is stored with your submission.', 'activelead' )
			. '</p>';
		wp_add_privacy_policy_content( 'Activelead', wp_kses_post( $text ) );
	}

	/**
	 * Register the exporter.
	 *
	 * @param array<string, mixed> $exporters Exporters.
	 * @return array<string, mixed>
	 */
	public static function register_exporter( $exporters ) {
		$exporters['activelead'] = array(
			'exporter_friendly_name' => __( 'Activelead spam checks', 'activelead' ),
			'callback'               => array( __CLASS__, 'export' ),
		);
		return $exporters;
	}

	/**
	 * Register the eraser.
	 *
	 * @param array<string, mixed> $erasers Erasers.
	 * @return array<string, mixed>
	 */
	public static function register_eraser( $erasers ) {
		$erasers['activelead'] = array(
			'eraser_friendly_name' => __( 'Activelead spam checks', 'activelead' ),
			'callback'             => array( __CLASS__, 'erase' ),
		);
		return $erasers;
	}

	/**
	 * One page of the e-mail address's comments that carry a result.
	 *
	 * @param string $email E-mail address.
	 * @param int    $page  Page, from 1.
	 * @return WP_Comment[]
	 */
	private static function comments( $email, $page ) {
		return get_comments(
			array(
				'author_email'       => $email,
				'number'             => self::PAGE_SIZE,
				'paged'              => max( 1, (int) $page ),
				'meta_key'           => Activelead::META_KEY, // phpcs:ignore WordPress.DB.SlowDBQuery.slow_db_query_meta_key -- bounded by author_email.
				'status'             => 'any',
				'orderby'            => 'comment_ID',
				'order'              => 'ASC',
			)
		);
	}

	/**
	 * Exporter callback.
	 *
	 * @param string $email E-mail address.
	 * @param int    $page  Page.
	 * @return array{data: array<int, mixed>, done: bool}
	 */
	public static function export( $email, $page = 1 ) {
		$items    = array();
		$comments = self::comments( $email, $page );
		foreach ( $comments as $comment ) {
			$result = get_comment_meta( (int) $comment->comment_ID, Activelead::META_KEY, true );
			if ( ! is_array( $result ) ) {
				continue;
			}
			$items[] = array(
				'group_id'    => 'activelead',
				'group_label' => __( 'Spam checks', 'activelead' ),
				'item_id'     => 'activelead-comment-' . $comment->comment_ID,
				'data'        => array(
					array(
						'name'  => __( 'Comment', 'activelead' ),
						'value' => (string) $comment->comment_ID,
					),
					array(
						'name'  => __( 'Decision', 'activelead' ),
						'value' => isset( $result['decision'] ) ? (string) $result['decision'] : '',
					),
					array(
						'name'  => __( 'Score', 'activelead' ),
						'value' => isset( $result['score'] ) ? (string) $result['score'] : '',
					),
					array(
						'name'  => __( 'Labels', 'activelead' ),
						'value' => isset( $result['labels'] ) ? implode( ', ', (array) $result['labels'] ) : '',
					),
					array(
						'name'  => __( 'Trace id', 'activelead' ),
						'value' => isset( $result['trace_id'] ) ? (string) $result['trace_id'] : '',
					),
				),
			);
		}
		return array(
			'data' => $items,
			'done' => count( $comments ) < self::PAGE_SIZE,
		);
	}

	/**
	 * Eraser callback: remove the stored results and ask the service to erase its events too.
	 *
	 * @param string $email E-mail address.
	 * @param int    $page  Page.
	 * @return array{items_removed: bool, items_retained: bool, messages: string[], done: bool}
	 */
	public static function erase( $email, $page = 1 ) {
		unset( $page );
		// Erased comments drop out of the query, so it always reads the first page.
		$comments = self::comments( $email, 1 );
		$removed  = false;
		foreach ( $comments as $comment ) {
			delete_comment_meta( (int) $comment->comment_ID, Activelead::META_KEY );
			delete_comment_meta( (int) $comment->comment_ID, Activelead::META_TRACE );
			delete_comment_meta( (int) $comment->comment_ID, 'activelead_feedback' );
			$removed = true;
		}
		$done     = count( $comments ) < self::PAGE_SIZE;
		$messages = array();
		$retained = false;
		if ( $done ) {
			$client = new Activelead_Client();
			if ( $client->configured() ) {
				$response = $client->erase( $email );
				if ( ! $response['ok'] ) {
					$retained   = true;
					/* translators: %s: the error. */
					$messages[] = sprintf( __( 'The Activelead service could not erase its records: %s', 'activelead' ), $response['error'] );
				} elseif ( ! empty( $response['body']['deleted'] ) ) {
					$removed = true;
				}
			}
		}
		return array(
			'items_removed'  => $removed,
			'items_retained' => $retained,
			'messages'       => $messages,
			'done'           => $done,
		);
	}
}
